"""``python -m launcher --check`` for real: alone, under mpirun, inside Slurm jobs.

A good setup passes with one table and exit 0; each broken setup gets its FAIL line
(verdict and fix on one line), exit non-zero, one table however many ranks, and no
process left behind. Nothing is started: no demo output, no cluster.
"""

import re
import subprocess

import pytest

from launcher.mpienv import diagnose_launcher, diagnose_world
from launcher.preflight import split_fix
from tests.conftest import BIN, MPIRUN, PYTHON, launcher_cmd, run
from tests.test_slurm_jobs import Submitter

TITLE = re.compile(r"^launcher --check: (?!\d+ ok, )", re.M)
TOTALS = re.compile(r"^launcher --check: (\d+) ok, (\d+) warn, (\d+) FAIL; ", re.M)
NAMES = ("mpi", "slurm", "config", "plan", "interface", "local-dir", "tls", "versions", "graphviz")


def line(result, name: str) -> str:
    """The table's line for one check, as ``verdict found -> fix``."""
    found = re.findall(rf"^  {re.escape(name)} +(.*)$", result.stdout, re.M)
    assert len(found) == 1, f"expected one {name!r} line\n{result}"
    return found[0]


def assert_one_table(result, code: int, failing: set[str] = frozenset()) -> None:
    """Exit ``code``, one table with every check, FAIL exactly on ``failing``, nothing left."""
    assert result.returncode == code, result
    assert not result.leftovers, result
    assert len(TITLE.findall(result.stdout)) == 1 and len(TOTALS.findall(result.stdout)) == 1
    verdicts = {name: line(result, name).split()[0] for name in NAMES}
    assert {n for n, v in verdicts.items() if v == "FAIL"} == failing, result
    assert set(verdicts.values()) <= {"ok", "warn", "FAIL"}, result
    assert "final result" not in result.stdout and "Traceback" not in result.output, result


def test_the_wrong_mpi_messages_split_into_problem_and_fix():
    # The table shows mpienv's one-sentence diagnoses as "found -> fix: ...".
    mpich = "MPICH Version:      5.0.2\n"
    messages = [
        diagnose_launcher({"OMPI_COMM_WORLD_SIZE": "3"}, mpich),
        diagnose_launcher({"SLURM_STEP_NUM_TASKS": "3", "PMIX_RANK": "0"}, mpich),
        diagnose_launcher({"MPI_LOCALNRANKS": "3", "PMI_SIZE": "3"}, "Open MPI v5.0.11"),
        diagnose_world({"OMPI_COMM_WORLD_SIZE": "3"}, 1, mpich),
        diagnose_world({"SLURM_STEP_NUM_TASKS": "3"}, 1, mpich),
        diagnose_world({"PMI_SIZE": "3"}, 1, mpich),
        diagnose_world({"SLURM_NTASKS": "3"}, 1, mpich),
    ]
    for message in messages:
        found, fix = split_fix(f"launcher: {message}", fallback="")
        assert found and fix[0].isupper() and found in message, message
        assert re.match(r"(Use|Start|Open MPI needs) ", fix), (message, fix)


def test_passes_alone_and_makes_nothing(tmp_path):
    scratch = tmp_path / "not-yet"  # made by workers in a real run, not by the check
    result = run(launcher_cmd("--check", "--local-directory", str(scratch), n=None), timeout=60)
    assert_one_table(result, 0)
    assert line(result, "mpi").startswith("ok") and "world of 1 (one process)" in result.stdout
    assert "single-process, 1 rank [MPI]: 1 worker x 1 thread" in line(result, "plan")
    assert re.search(r"writable, [\d.]+ [GMT]iB free", line(result, "local-dir")), result
    assert "ready" in result.stdout and not scratch.exists()


def test_passes_under_mpirun_with_one_table():
    # As under --gpus-per-node=2: the two workers get one GPU each.
    result = run(launcher_cmd("--check", n=3), env={"CUDA_VISIBLE_DEVICES": "0,1"}, timeout=60)
    assert_one_table(result, 0)
    assert "3 ranks on" in result.stdout
    assert "world of 3 = the 3 processes started" in line(result, "mpi")
    assert "compact, 3 ranks [MPI]: 2 workers x 1 thread" in line(result, "plan")
    assert line(result, "plan").endswith(
        ", 1 GPU each [env CUDA_VISIBLE_DEVICES shared out among the node's workers]"
    )
    assert line(result, "interface").startswith(
        "ok    lo [env DASK_LAUNCHER__INTERFACE]: 127.0.0.1"
    )
    assert re.search(r"dask \S+, distributed \S+, dask-mpi \S+, mpi4py \S+; MPICH", result.stdout)


def test_wrong_mpi_is_a_fail_line_printed_once():
    # MPICH's mpiexec, but the processes lose their PMI connection, as with a library
    # that cannot speak the launcher's PMI: each process is a world of 1.
    cmd = [MPIRUN, "-n", "3", "env", "-u", "PMI_FD", "-u", "PMI_PORT", PYTHON]
    result = run([*cmd, "-m", "launcher", "--check"], timeout=60)
    assert_one_table(result, 1, {"mpi"})
    assert "3 processes started, but MPI did not join them: only this one" in result.stdout
    mpi = line(result, "mpi")
    assert "mpiexec started 3 processes" in mpi and "-> fix: Use the mpiexec" in mpi
    assert "mpiexec started 3 processes" not in result.stderr  # the table, not the error


@pytest.mark.parametrize(("rank", "speaks"), [("0", True), ("1", False)])
def test_a_launcher_the_library_cannot_join_before_mpi_init(rank, speaks):
    # What Open MPI's mpirun gives each process; mpi4py here uses MPICH, which the
    # launcher refuses before MPI_Init: a FAIL line, printed by rank 0 only.
    env = {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": rank}
    result = run(launcher_cmd("--check", n=None), env=env, timeout=60)
    if not speaks:  # silent, and exit 0 so that the launcher does not cut rank 0 off
        assert result.returncode == 0 and not result.output and not result.leftovers, result
        return
    assert_one_table(result, 1, {"mpi"})
    mpi = line(result, "mpi")
    assert "Open MPI's mpirun started this process, but mpi4py uses another MPI" in mpi
    assert "-> fix: Use the mpirun/mpiexec that belongs to mpi4py's MPI" in mpi


def test_a_missing_interface_fails():
    result = run(launcher_cmd("--check", "--interface", "nosuch0", n=3), timeout=60)
    assert_one_table(result, 1, {"interface", "plan"})
    interface = line(result, "interface")
    assert "'nosuch0' [flag --interface] does not exist on" in interface
    assert re.search(r"-> fix: Set --interface .* every host: .*\blo\b", interface), result


def test_a_local_directory_that_cannot_be_made_fails(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = run(launcher_cmd("--check", "--local-directory", str(a_file), n=2), timeout=60)
    assert_one_table(result, 1, {"local-dir"})
    local = line(result, "local-dir")
    assert f"{a_file} [flag --local-directory] on " in local
    assert f"{a_file} is not a directory" in local
    assert "-> fix: Point --local-directory" in local


@pytest.fixture
def hidden(tmp_path):
    """A directory for PYTHONPATH whose packages raise ImportError, as if not installed."""

    def hide(*packages: str) -> str:
        for name in packages:
            (tmp_path / "hidden" / name).mkdir(parents=True)
            (tmp_path / "hidden" / name / "__init__.py").write_text(
                f"raise ImportError('{name} is not installed')\n"
            )
        return str(tmp_path / "hidden")

    return hide


def test_tls_without_cryptography_fails_and_insecure_warns(hidden):
    env = {"PYTHONPATH": hidden("cryptography")}
    result = run(launcher_cmd("--check", n=2), env=env, timeout=60)
    assert_one_table(result, 1, {"tls"})
    tls = line(result, "tls")
    assert "needs the 'cryptography' package  -> fix: Install it" in tls and "--insecure" in tls
    insecure = run(launcher_cmd("--check", "--insecure", n=2), env=env, timeout=60)
    assert_one_table(insecure, 0)
    assert line(insecure, "tls").startswith("warn  plain TCP [flag --insecure]")


def test_graphviz_missing_is_a_warning(hidden):
    # The package hidden, and a PATH without the dot program (only the venv's bin).
    env = {"PYTHONPATH": hidden("graphviz"), "PATH": str(BIN)}
    result = run(launcher_cmd("--check", n=None), env=env, timeout=60)
    assert_one_table(result, 0)
    graphviz = line(result, "graphviz")
    assert graphviz.startswith("warn  Python package 'graphviz' missing; no 'dot' program")
    assert "-> fix: pip install graphviz" in graphviz


# --- inside real Slurm jobs (tools/minislurm), through the real jobscript ----------


@pytest.fixture
def one(slurm_one, tmp_path):
    return Submitter(slurm_one, tmp_path)


@pytest.fixture
def three(slurm_three, tmp_path):
    return Submitter(slurm_three, tmp_path)


class JobOutput:
    """A finished job's log, shaped like a ``run`` result for the helpers above."""

    def __init__(self, text: str, code: int) -> None:
        self.stdout, self.output, self.returncode, self.leftovers = text, text, code, []

    def __repr__(self) -> str:
        return self.stdout


def finished(submitter: Submitter, job) -> JobOutput:
    state, exit_code = submitter.finish(job, timeout=60)
    assert state in ("COMPLETED", "FAILED"), job.text
    return JobOutput(job.text, int(exit_code.split(":")[0]))


def test_check_inside_a_real_job_shows_the_allocations_plan(one):
    job = one.submit("--ntasks=3", "--cpus-per-task=2", "--mem-per-cpu=512M", args=["--check"])
    result = finished(one, job)
    assert_one_table(result, 0)
    assert re.search(rf"job {job.id}, step \d+: 3 tasks on n1, 2 cpus per task", result.stdout), (
        result
    )
    assert "SLURM_MPI_TYPE=pmi2" in line(result, "slurm")
    plan = line(result, "plan")
    assert "compact, 3 ranks [MPI]: 2 workers x 2 threads [env SLURM_CPUS_PER_TASK]" in plan
    assert "1.00 GiB each [env SLURM_MEM_PER_CPU x cpus per task (512 MiB x 2)]" in plan
    assert re.search(
        r"ok +ib0 \[env DASK_LAUNCHER__INTERFACE\]: 10\.42\.0\.\d+ on n1", result.stdout
    )
    assert not list(one.workdir.glob("dask-summary-*.json")), "--check wrote a summary"


@pytest.mark.parametrize(
    ("plugin", "found", "fix"),
    [
        ("none", "srun's MPI plugin does not match", "-> fix: Open MPI needs srun --mpi=pmix"),
        ("pmix", "srun started this task with the PMIx plugin", "-> fix: Use srun --mpi=pmi2"),
    ],
)
def test_check_with_the_wrong_mpi_plugin_names_it(one, plugin, found, fix):
    job = one.submit("--ntasks=3", args=["--check"], env={"SLURM_MPI_TYPE": plugin})
    result = finished(one, job)
    assert_one_table(result, 1, {"mpi"})
    mpi = line(result, "mpi")
    assert found in mpi and fix in mpi and "--mpi=pmi2" in mpi, result
    # Planned for what the job meant (as --plan does), not for a world of one.
    assert "compact, 3 ranks [env SLURM_STEP_NUM_TASKS" in line(result, "plan"), result


def _in_node(three: Submitter, node: str, *cmd: str) -> None:
    """A command in one test node's own mount namespace (the one its slurmd and jobs use)."""
    daemons = three.cluster.recorded()["daemons"]
    pid = next(d["pid"] for d in daemons if d["name"] == f"slurmd-{node}")
    subprocess.run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", *cmd], check=True, timeout=30)


def test_a_problem_on_another_node_is_seen(three, tmp_path):
    # A local directory that is read-only on n2 only: rank 0's node is fine, n2 is not.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _in_node(three, "n2", "mount", "-t", "tmpfs", "-o", "ro,size=1m", "preflight", str(scratch))
    try:
        job = three.submit(
            "--nodes=3",
            "--ntasks-per-node=1",
            "--ntasks=3",
            args=["--check", "--local-directory", str(scratch)],
        )
        result = finished(three, job)
    finally:
        _in_node(three, "n2", "umount", str(scratch))
    assert_one_table(result, 1, {"local-dir"})
    assert "3 ranks on n1, n2, n3" in result.stdout
    assert re.search(
        r"ib0 \[.*\]: 10\.42\.0\.1 on n1, 10\.42\.0\.2 on n2, 10\.42\.0\.3 on n3", result.stdout
    )
    local = line(result, "local-dir")
    assert f"{scratch} [flag --local-directory] on n2: cannot create a directory" in local
    assert "Read-only file system  -> fix: Point --local-directory" in local
