"""The built-in demo: the workload of the Dask tutorial our users come from.

``python -m launcher`` with no script runs this module as ``__main__`` on the client
rank, so it is exactly what a user script looks like under the launcher: plain Dask
code, no cluster setup, no ``Client(...)`` call.
"""

import dask


@dask.delayed
def increment_data(data):
    return data + 1


def do_analysis(result):
    return sum(result)


def main() -> None:
    all_data = [1, 2, 3, 4, 5]
    results = []
    for data in all_data:
        data_incremented = increment_data(data)
        results.append(data_incremented)

    analysis = dask.delayed(do_analysis)(results)
    final_result = analysis.compute()
    print(f"and the final result is: {final_result}")


if __name__ == "__main__":
    main()
