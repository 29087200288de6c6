"""The scripts the contenders run, written into a scratch directory for each suite run.

Every cluster contender runs the same user code; only the few lines that get a
``Client`` differ, which is exactly the change a user makes to move between them.
The user code reports what it measures as ``BENCH {json}`` lines on stdout:

* ``ready``: wall-clock time when user code starts, after every expected worker has
  registered (``client.wait_for_workers``; the launcher already guarantees it, dask-mpi
  and the others do not);
* ``result``: the tutorial's answer, and the workers and threads counted from the
  running cluster (``scheduler_info``), not from theory;
* ``end``: ``time.time()`` as the user code's last act; whatever follows is shutdown.

Scripts read their parameters from the environment (``BENCH_*``), so one file serves
every size.
"""

from __future__ import annotations

from pathlib import Path

#: Shared by every script: the marker printer and the two workloads.
COMMON = '''
import json
import os
import time


def mark(event, **data):
    print("BENCH " + json.dumps({"event": event, "t": time.time(), **data}), flush=True)


def ready(client):
    client.wait_for_workers(int(os.environ["BENCH_WORKERS"]), timeout=120)
    mark("ready")


def count(client):
    info = client.scheduler_info(n_workers=-1)
    workers = info["workers"].values()
    return {
        "workers": len(workers),
        "threads": sum(w["nthreads"] for w in workers),
        "protocol": info["address"].split("://")[0],
    }


def tutorial(client):
    """The Dask tutorial's workload (the launcher's built-in demo), timed."""
    ready(client)
    import dask

    @dask.delayed
    def increment_data(data):
        return data + 1

    def do_analysis(result):
        return sum(result)

    all_data = [1, 2, 3, 4, 5]
    results = []
    for data in all_data:
        data_incremented = increment_data(data)
        results.append(data_incremented)

    analysis = dask.delayed(do_analysis)(results)
    final_result = analysis.compute()
    print(f"and the final result is: {final_result}")
    mark("result", value=final_result, **count(client))
    mark("end")


def tiny(x):
    return x


def throughput(client):
    """Tiny tasks through client.map, then a dask.array reduction that moves data."""
    ready(client)
    import dask.array as da

    n = int(os.environ["BENCH_TASKS"])
    client.gather(client.map(tiny, range(-200, 0)))  # warm up: function, connections
    start = time.perf_counter()
    futures = client.map(tiny, range(n))
    total = sum(client.gather(futures))
    seconds = time.perf_counter() - start
    del futures
    assert total == n * (n - 1) // 2, total
    mark("tiny", seconds=seconds, tasks=n)

    side = int(os.environ["BENCH_ARRAY_SIDE"])
    x = da.random.default_rng(0).random((side, side), chunks=side // 16)
    y = (x + x.T).sum()
    tasks = len(y.__dask_graph__())
    start = time.perf_counter()
    y.compute()
    seconds = time.perf_counter() - start
    mark("array", seconds=seconds, tasks=tasks, bytes=side * side * 8, **count(client))
    mark("end")
'''

#: How each kind of contender gets its client; ``{work}`` is tutorial or throughput.
HARNESSES = {
    # The launcher: the script is plain user code, a client is already there.
    "launcher": """
from distributed import get_client

{work}(get_client())
""",
    # Classic dask-mpi: rank 0 scheduler, rank 1 continues, ranks 2+ workers.
    "initialize": """
from dask_mpi import initialize

initialize()
from distributed import Client

{work}(Client())
""",
    # dask-mpi's execute(): the user code is a function run on rank 1.
    "execute": """
from dask_mpi import execute


def main():
    from distributed import Client

    {work}(Client())


execute(main)
""",
    # One process tree without MPI: what a one-node user would write.
    "local": """
if __name__ == "__main__":
    from distributed import Client, LocalCluster, Security

    security = Security.temporary() if os.environ.get("BENCH_TLS") == "1" else None
    with LocalCluster(
        n_workers=int(os.environ["BENCH_WORKERS"]),
        threads_per_worker=int(os.environ.get("BENCH_THREADS", "1")),
        security=security,
    ) as cluster, Client(cluster) as client:
        {work}(client)
""",
    # dask-jobqueue's in-job runner, one process per srun task.
    "slurmrunner": """
from dask_jobqueue.slurm import SLURMRunner
from distributed import Client

with SLURMRunner(scheduler_file=os.environ["BENCH_SCHEDULER_FILE"]) as runner:
    with Client(runner) as client:
        {work}(client)
""",
}

#: The tutorial's script for SLURMCluster, as NRIS documents it (one job per worker),
#: with only the account made harmless and the count of workers (and when) reported.
SLURMCLUSTER_TUTORIAL = """
import dask
from dask.distributed import Client
from dask_jobqueue import SLURMCluster

cluster = SLURMCluster(cores=1,
                       processes=1,
                       memory="500M",
                       walltime="00:05:00",
                       account="nn9999k",
                       interface='ib0')

cluster.scale(5) # scale cluster to 5 workers

client = Client(cluster) # connect to the cluster

@dask.delayed
def increment_data(data):
    return data + 1

def do_analysis(result):
    return sum(result)

all_data = [1, 2, 3, 4, 5]
results = []
for data in all_data:
    data_incremented = increment_data(data)
    results.append(data_incremented)

analysis = dask.delayed(do_analysis)(results)
final_result = analysis.compute()
print(f"and the final result is: {final_result}")
workers = client.scheduler_info(n_workers=-1)["workers"]
import time
print("BENCH_SLURMCLUSTER", len(workers), len(cluster.workers), time.time(), flush=True)

cluster.close() # shutdown the cluster
client.close() # shutdown the client
"""

#: Every MPI launcher at least starts Python, MPI and distributed on every rank.
FLOOR_CODE = "from mpi4py import MPI; import distributed"


def script_name(harness: str, work: str) -> str:
    return f"{work}_{harness}.py"


def write_scripts(directory: Path) -> None:
    """Write every harness x workload script (and the SLURMCluster tutorial)."""
    directory.mkdir(parents=True, exist_ok=True)
    for harness, template in HARNESSES.items():
        for work in ("tutorial", "throughput"):
            text = COMMON + template.format(work=work)
            (directory / script_name(harness, work)).write_text(text)
    (directory / "dask_example.py").write_text(SLURMCLUSTER_TUTORIAL)
