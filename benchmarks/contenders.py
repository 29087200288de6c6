"""Who is measured, and the command each one runs on this machine.

The launcher's configurations are defined by flags kept here in one place, so that a
new launcher flag (``--insecure``, a no-nanny switch) changes the benchmark by editing
a constant, not the code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.workloads import FLOOR_CODE, script_name

BIN = Path(sys.executable).parent
PYTHON = sys.executable
MPIRUN = str(BIN / "mpirun")

#: The launcher's leanest configuration: every flag that makes it start and stop
#: faster (no dashboard, no TLS, workers without a nanny).
LEANEST_FLAGS: tuple[str, ...] = ("--no-dashboard", "--insecure", "--no-nanny")

#: The launcher with TLS on (its default), for the throughput figure.
LAUNCHER_TLS_FLAGS: tuple[str, ...] = ()

#: The launcher with TLS off, for the throughput figure.
LAUNCHER_PLAIN_FLAGS: tuple[str, ...] = ("--insecure",)


@dataclass(frozen=True)
class Contender:
    """One way to run the user's Dask code; ``command`` gives its argv for N ranks.

    ``harness`` names the script variant in ``workloads`` (None: the floor, which runs
    no user code). ``mpi`` is whether N counts MPI ranks; for ``LocalCluster`` N is the
    launcher job it is compared with, and it gets the same N-1 workers.
    """

    key: str
    label: str
    harness: str | None
    flags: tuple[str, ...] = ()
    mpi: bool = True
    tls: bool = False

    def workers_for(self, ranks: int) -> int:
        """How many workers to wait for before user code counts as started.

        Only a wait condition: the report counts workers from the running cluster.
        """
        if self.harness in ("initialize", "execute", "slurmrunner"):
            return ranks - 2
        return ranks - 1

    def command(self, ranks: int, work: str, scripts: Path) -> list[str]:
        if self.harness is None:
            return [MPIRUN, "-n", str(ranks), PYTHON, "-c", FLOOR_CODE]
        script = str(scripts / script_name(self.harness, work))
        if self.harness == "local":
            return [PYTHON, script]
        if self.harness == "launcher":
            return [MPIRUN, "-n", str(ranks), PYTHON, "-m", "launcher", *self.flags, script]
        return [MPIRUN, "-n", str(ranks), PYTHON, script]

    def env(self, ranks: int, sizes: dict[str, int]) -> dict[str, str]:
        return {
            "BENCH_WORKERS": str(self.workers_for(ranks)),
            "BENCH_TLS": "1" if self.tls else "0",
            **{f"BENCH_{name.upper()}": str(value) for name, value in sizes.items()},
        }


LAUNCHER = Contender("launcher", "launcher (default)", "launcher")
LEANEST = Contender("leanest", f"launcher ({' '.join(LEANEST_FLAGS)})", "launcher", LEANEST_FLAGS)
INITIALIZE = Contender("initialize", "dask-mpi initialize()", "initialize")
EXECUTE = Contender("execute", "dask-mpi execute()", "execute")
LOCAL = Contender("local", "LocalCluster (no MPI)", "local", mpi=False)
FLOOR = Contender(
    "floor", "floor: mpirun python -c 'from mpi4py import MPI; import distributed'", None
)

#: Figures 1, 2 and 5 under mpirun (or without MPI for LocalCluster).
STARTUP: tuple[Contender, ...] = (LAUNCHER, LEANEST, INITIALIZE, EXECUTE, LOCAL, FLOOR)


#: Figure 4: the same workers and threads, TLS off and on.
THROUGHPUT: tuple[Contender, ...] = (
    Contender("launcher-plain", "launcher, no TLS", "launcher", LAUNCHER_PLAIN_FLAGS),
    Contender("launcher-tls", "launcher, TLS", "launcher", LAUNCHER_TLS_FLAGS, tls=True),
    Contender("local-plain", "LocalCluster, no TLS", "local", mpi=False),
    Contender("local-tls", "LocalCluster, TLS", "local", mpi=False, tls=True),
)


def rotated(items: Sequence[Contender], rep: int) -> list[Contender]:
    """The contenders in a different order each repetition, so that no contender
    always runs right after the same other one (caches, a lingering CPU hog)."""
    shift = rep % len(items) if items else 0
    return [*items[shift:], *items[:shift]]
