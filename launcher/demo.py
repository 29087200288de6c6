"""The built-in demo: the workload of the Dask tutorial our users come from.

``python -m launcher`` with no script runs this module as ``__main__`` on the client
rank, so it is exactly what a user script looks like under the launcher: plain Dask
code, no cluster setup, no ``Client(...)`` call. ``--graph PATH`` draws its task graph
as the tutorial's ``analysis.visualize(...)`` does.
"""

import argparse
import sys

import dask


@dask.delayed
def increment_data(data):
    return data + 1


def do_analysis(result):
    return sum(result)


def draw(analysis, path: str) -> None:
    """Write the task graph (SVG or PNG by suffix); without graphviz, say what to
    install and go on: the picture is a bonus, the result is the job."""
    try:
        analysis.visualize(filename=path)
    except Exception as err:  # ImportError, or graphviz's ExecutableNotFound for `dot`
        print(
            f"launcher demo: cannot draw the task graph ({type(err).__name__}: {err}); "
            "install graphviz: pip install graphviz, and the dot program (apt install "
            "graphviz, or module load Graphviz)",
            file=sys.stderr,
        )
    else:
        print(f"launcher demo: task graph written to {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m launcher.demo")
    parser.add_argument("--graph", metavar="PATH", help="draw the task graph (.svg, .png)")
    args = parser.parse_args(argv)

    all_data = [1, 2, 3, 4, 5]
    results = []
    for data in all_data:
        data_incremented = increment_data(data)
        results.append(data_incremented)

    analysis = dask.delayed(do_analysis)(results)
    final_result = analysis.compute()
    print(f"and the final result is: {final_result}")
    if args.graph:
        draw(analysis, args.graph)


if __name__ == "__main__":
    main()
