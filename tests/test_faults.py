"""Fault injection, for real: killed workers, killed schedulers and clients, workers that
cannot reach the scheduler, foreign processes knocking on the cluster's ports, broken
environments. Every run has a timeout; nothing may outlive its job."""

import json
import os
import re
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import PYTHON, launcher_cmd, run, start
from tests.test_mpirun import assert_clean
from tests.test_signals import start_sleepy
from tests.test_slurm_jobs import JOBSCRIPTS, Submitter

KILL_A_WORKER = """
import os, time
from distributed import get_client
client = get_client()
before = sorted(client.run(os.getpid).values())
print("WORKERS", *before, flush=True)
futures = client.map(lambda i: (time.sleep(0.3), i * 2)[1], range(40), pure=False)
print("STARTED", flush=True)
total = sum(client.gather(futures))
client.wait_for_workers(3, timeout=30)
after = sorted(client.run(os.getpid).values())
print("RESULT", total, "NEW WORKERS", len(set(after) - set(before)), flush=True)
"""


def kill_a_worker_process(job) -> None:
    """The nanny restarts the killed worker process; its tasks run again elsewhere."""
    victim = int(job.wait_for_line("WORKERS").split()[1])
    job.wait_for_line("STARTED")
    time.sleep(0.5)
    os.kill(victim, signal.SIGKILL)
    result = job.finish(timeout=90)
    assert_clean(result)
    assert f"RESULT {2 * sum(range(40))} NEW WORKERS 1" in result.stdout
    # Said in one line, which distributed logs only as a hidden warning.
    assert result.stderr.count("its worker process was killed (SIGKILL") == 1, result


def test_a_killed_worker_process_is_restarted_and_the_job_succeeds(script):
    kill_a_worker_process(start(launcher_cmd(str(script(KILL_A_WORKER)))))


RESTART = """
import os, time
import dask
from distributed import get_client
client = get_client()
before = set(client.run(os.getpid).values())
began = time.monotonic()
try:
    client.restart()
except RuntimeError as err:
    print("REFUSED", err)
after = set(client.run(os.getpid).values())
print("WORKERS", len(after), "ALL NEW", not after & before, "SECONDS", time.monotonic() - began)
print("RESULT", dask.delayed(sum)([1, 2]).compute())
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"]])
def test_client_restart_restarts_the_workers_or_says_at_once_why_not(script, flags):
    # Without nannies distributed removes every worker and waits 120 s for someone to
    # start new ones; here nobody would, so the launcher's scheduler refuses at once.
    result = run(launcher_cmd(*flags, str(script(RESTART))), timeout=90)
    assert_clean(result)
    assert "RESULT 3" in result.stdout
    workers = re.search(r"WORKERS (\d+) ALL NEW (\w+) SECONDS (\S+)", result.stdout)
    assert workers and workers[1] == "3", result
    if flags:
        assert "REFUSED client.restart() needs a nanny per worker" in result.stdout, result
        assert "--no-nanny" in result.stdout and workers[2] == "False", result
        assert float(workers[3]) < 10, result
        assert "Traceback" not in result.stderr, result
    else:
        assert "REFUSED" not in result.stdout and workers[2] == "True", result


@pytest.mark.parametrize("flags", [[], ["--no-nanny"]])
def test_a_module_the_workers_cannot_import_ends_the_job_saying_so(script, flags):
    # A task whose function the workers cannot unpickle closes each worker it reaches
    # (distributed #1341); with none left the script's compute() used to wait forever.
    # The module here exists only in the client's process, as one installed only where
    # the script runs would.
    path = script(
        "import sys, types\n"
        "elsewhere = sys.modules['elsewhere'] = types.ModuleType('elsewhere')\n"
        "exec('def cube(x):\\n    return x ** 3\\n', elsewhere.__dict__)\n"
        "from elsewhere import cube\n"
        "from distributed import Client\n"
        "client = Client()\n"
        "print('RESULT', sum(client.gather(client.map(cube, range(10)))))\n"
    )
    result = run(launcher_cmd(*flags, str(path)), timeout=60)
    assert_clean(result, 1)
    assert "RESULT" not in result.stdout
    for rank in (1, 2, 3):
        assert re.search(
            rf"^launcher: worker rank {rank} on \S+ closed its worker: "
            r"ModuleNotFoundError: No module named 'elsewhere'$",
            result.stderr,
            re.MULTILINE,
        ), result
    assert re.search(
        r"launcher\.ClusterLost: no worker is left \(the last: worker rank \d .*"
        "No module named 'elsewhere'; workers import from the job's Python environment",
        result.stderr,
    ), result
    assert "launcher: failed, exit 1" in result.stderr, result
    assert result.seconds < 30, result


def test_workers_ended_by_a_lifetime_from_dask_jobqueue_days_say_what_to_do(script):
    # Kept in a Dask config from dask-jobqueue, where a worker left before its own
    # job's walltime for another to replace it, a lifetime ends every worker of the job
    # and none comes back: the job failed saying only "worker-lifetime-reached".
    path = script(
        "import time\n"
        "from distributed import Client\n"
        "client = Client()\n"
        "time.sleep(30)\n"
        "print('RESULT', client.submit(sum, [1, 2]).result())\n"
    )
    env = {"DASK_DISTRIBUTED__WORKER__LIFETIME__DURATION": "2s"}
    result = run(launcher_cmd("--no-progress", str(path), n=3), env=env, timeout=60)
    assert_clean(result, 1)
    assert "RESULT" not in result.stdout
    # said at the start too (and by --check, before the queue: tests/test_plan.py)
    assert (
        "launcher: distributed.worker.lifetime.duration (2s) in your Dask config"
        in (result.stderr.split("Traceback")[0])
    ), result
    assert re.search(
        r"launcher\.ClusterLost: no worker is left \(the last: worker rank \d on \S+ closed "
        r"its worker: worker-lifetime-reached; distributed\.worker\.lifetime\.duration in "
        r"your Dask config ended them: .* drop the setting \(or set "
        r"distributed\.worker\.lifetime\.restart to true\)\)",
        result.stderr,
    ), result


def test_a_scheduler_closed_by_its_idle_timeout_says_so(script):
    # An idle-timeout kept in a Dask config from interactive clusters closed the
    # scheduler while the script worked on its own, and the job ended as if the
    # scheduler's rank had been killed; the reason was an INFO line left out of the log.
    path = script(
        "import time\n"
        "from distributed import Client\n"
        "client = Client()\n"
        "print('FIRST', client.submit(sum, [1, 2]).result(), flush=True)\n"
        "time.sleep(20)\n"
        "print('SECOND', client.submit(sum, [3, 4]).result())\n"
    )
    env = {"DASK_DISTRIBUTED__SCHEDULER__IDLE_TIMEOUT": "2s"}
    result = run(launcher_cmd("--no-progress", str(path), n=3), env=env, timeout=60)
    assert_clean(result, 1)
    assert "FIRST 3" in result.stdout and "SECOND" not in result.stdout, result
    assert (
        "launcher: distributed.scheduler.idle-timeout (2s) in your Dask config ends"
        in (result.stderr.split("the scheduler closes after")[0])
    ), result
    assert (
        "launcher: the scheduler closes after 2.00 s without work, as "
        "distributed.scheduler.idle-timeout in your Dask config says, and the job ends "
        "with it: drop that setting where your script waits between computations"
    ) in result.stderr, result
    assert "ClusterLost" in result.stderr, result


GIL_HOG = """
import re, time
from distributed import get_client
client = get_client()

def hog():
    # Backtracking in C that holds the GIL for hours: the rank's own threads cannot run.
    return bool(re.match(r"(a+)+$", "a" * 40 + "b"))

futures = [client.submit(hog, pure=False) for _ in range(3)]
time.sleep(1)
print("SCRIPT DONE", flush=True)
"""


def test_ranks_that_cannot_close_are_ended_and_the_summary_says_so(script, tmp_path):
    # Under --no-nanny a task holding the GIL keeps its rank from answering STOP. The
    # job ends them with MPI_Abort (no wait for the walltime), so it fails: the summary
    # said "ok, exit 0" all the same, and the JSON gave no exit status like the job's.
    summary = tmp_path / "summary.json"
    cmd = launcher_cmd("--no-nanny", "--summary", str(summary), str(script(GIL_HOG)))
    result = run(cmd, timeout=60)
    assert result.returncode != 0 and not result.leftovers, result
    assert "SCRIPT DONE" in result.stdout, result
    said = (
        "launcher: ranks [1, 2, 3] did not close within the shutdown timeout (3 s), so the "
        "job ends them with MPI_Abort, after your code ended with status 0 (under "
        "--no-nanny a task that holds the GIL keeps its rank busy)\n"
        "launcher: failed, exit 1;"
    )
    assert result.stderr.count(said) == 1, result
    written = json.loads(summary.read_text())
    assert (written["status"], written["exit_code"]) == ("failed", 1), written
    assert written["error"].startswith("ranks [1, 2, 3] did not close"), written
    assert result.seconds < 40, result


RETIRE = """
from distributed import Client
client = Client()
workers = sorted(client.scheduler_info()["workers"])
client.retire_workers(workers[:1])
print("LEFT", len(client.scheduler_info()["workers"]), flush=True)
print("RESULT", client.submit(sum, [1, 2]).result())
"""


@pytest.mark.parametrize(
    "n, flags",
    [(4, []), (None, ["--no-nanny"])],
    ids=["one of three workers", "the only worker of a single process"],
)
def test_a_retired_worker_is_reported_and_the_job_ends_when_none_is_left(script, n, flags):
    result = run(launcher_cmd(*flags, str(script(RETIRE)), n=n), timeout=60)
    said = re.findall(
        r"^launcher: (?:worker )?rank \d+ (?:on \S+ )?closed its worker: (.*)$",
        result.stderr,
        re.MULTILINE,
    )
    assert said == ["scheduler-remove-worker"], result
    if n:
        assert_clean(result)
        assert "LEFT 2" in result.stdout and "RESULT 3" in result.stdout, result
        # The retired worker's process used to wait 2 s at exit (distributed's stop-
        # queue thread), and the job's shutdown with it; now it is a few hundredths.
        shutdown = float(re.search(r"shutdown (\S+) s$", result.stderr, re.MULTILINE)[1])
        assert shutdown < 1.5, result
    else:
        assert_clean(result, 1)
        assert "LEFT 0" in result.stdout and "RESULT" not in result.stdout, result
        assert "launcher.ClusterLost: no worker is left" in result.stderr, result


def test_under_other_mpis_a_killed_worker_process_is_restarted(script, other_mpi):
    """Their mpirun watches the ranks, not the ranks' children: the nanny's restart
    works as under MPICH."""
    path = str(script(KILL_A_WORKER))
    kill_a_worker_process(start(other_mpi.cmd(4, path), env=other_mpi.env))


MEMORY_HOG = """
import time
from distributed import KilledWorker, get_client
client = get_client()

def hog(nbytes):
    data = b"\\x01" * nbytes
    time.sleep(3)
    return len(data)

try:
    client.submit(hog, 700_000_000).result()
except KilledWorker as err:
    print("KILLED", type(err).__name__, flush=True)
client.wait_for_workers(3, timeout=30)  # the killed workers are back
print("AFTER", client.submit(lambda: 42).result(), len(client.scheduler_info()["workers"]))
"""


def test_a_task_over_the_memory_limit_restarts_its_worker_not_the_job(script):
    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    result = run(
        launcher_cmd("--memory-limit", "300MiB", str(script(MEMORY_HOG))), env=env, timeout=120
    )
    assert_clean(result)
    assert "KILLED KilledWorker" in result.stdout
    assert "AFTER 42 3" in result.stdout
    # Why the workers died, which distributed logs only as a hidden warning.
    said = "its worker process went over 95% of its memory limit (300.00 MiB) and is restarted"
    assert result.stderr.count(said) == 2, result  # allowed-failures 1: two workers


LEAKY = """
import builtins, time
from distributed import get_client
client = get_client()

def leaky(i):
    # Memory a library keeps between tasks (a cache, a leak): Dask cannot spill it.
    builtins.__dict__.setdefault("kept", []).append(bytearray(100_000_000))
    time.sleep(0.3)  # the memory monitor pauses the worker before its next task
    return i

print("RESULT", sum(client.gather(client.map(leaky, range(8)))), flush=True)
"""

#: A worker paused for memory Dask cannot free is restarted or leaves this soon.
PAUSED_TIMEOUT = {"DASK_LAUNCHER__PAUSED_TIMEOUT": "2"}


def test_a_worker_paused_for_memory_dask_cannot_free_is_restarted(script):
    """Each task keeps 100 MB outside Dask's data, so each worker (400 MiB) pauses after
    three, short of the 8 tasks; distributed would keep them paused for good and the
    job would wait for its walltime (distributed #3761). Restarted, they finish them,
    and no task is blamed (KilledWorker) for restarts it did not cause."""
    cmd = launcher_cmd("--memory-limit", "400MiB", "--no-progress", str(script(LEAKY)), n=3)
    result = run(cmd, env=PAUSED_TIMEOUT, timeout=90)
    assert_clean(result)
    assert "RESULT 28" in result.stdout
    said = re.findall(
        r"launcher: worker rank \d on \S+: paused for memory for \d+ s with nothing Dask "
        r"can spill: its process holds [\d.]+ MiB of its 400.00 MiB limit outside Dask's "
        r"data, over the 80% at which Dask pauses it \(memory its tasks or their libraries "
        r"kept\); its worker process is restarted: give workers more memory",
        result.stderr,
    )
    assert said, result
    assert "KilledWorker" not in result.output, result
    assert "Invalid Worker.status transition" not in result.stderr, result


@pytest.mark.parametrize(
    "flags, env, why",
    [
        (["--no-nanny"], {}, "; without a nanny it cannot be restarted: give workers more"),
        # The worker process alone (about 60 MiB) is over the pause fraction of 200 MiB.
        ([], {"DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "0.2"}, "; a new process would pause too"),
    ],
)
def test_a_worker_a_restart_cannot_unpause_leaves_the_job_saying_why(script, flags, env, why):
    """Without a nanny a worker cannot restart, and one paused before its first task
    would pause again at once: they leave the job, which ends once none is left,
    instead of waiting for its walltime."""
    cmd = launcher_cmd("--memory-limit", "200MiB", *flags, "--no-progress", str(script(LEAKY)), n=3)
    result = run(cmd, env={**PAUSED_TIMEOUT, **env}, timeout=90)
    assert_both_workers_left(
        result,
        r"paused for memory for \d+ s with nothing Dask can spill: its process holds "
        r"[\d.]+ MiB of its 200.00 MiB limit outside Dask's data, over the \d+% at which "
        rf"Dask pauses it{re.escape(why)}",
    )


def assert_both_workers_left(result, why: str) -> None:
    """Both workers (ranks 1 and 2) left the job saying ``why`` (a pattern), and the job
    failed once none was left."""
    assert_clean(result, code=1)
    left = re.findall(rf"launcher: worker rank (\d) on \S+ closed its worker: {why}", result.stderr)
    assert sorted(left) == ["1", "2"], result
    assert "ClusterLost" in result.stderr, result
    # the scheduler's word on a worker that is leaving already is no error
    assert "Invalid Worker.status transition" not in result.stderr, result


FILL = """
import numpy as np
from distributed import get_client, wait
client = get_client()
# 24 arrays of 50 MB: more than two workers of 500 MiB hold below their pause
# fraction (80%) with the 64 MB they can spill.
wait([client.submit(np.full, 6_250_000, i, pure=False) for i in range(24)])
print("HELD", flush=True)
"""


@pytest.fixture
def small_scratch(tmp_path):
    """A 64-MB file system for the workers' spill directories, as a node-local scratch
    that fills up."""
    where = tmp_path / "scratch"
    where.mkdir()
    mounted = run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(where)], timeout=10)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        run(["umount", str(where)], timeout=10)


def test_workers_that_cannot_spill_to_a_full_disk_leave_the_job_saying_why(script, small_scratch):
    """Their spill directory full, the workers keep the data in memory and pause; they
    stayed paused for good, and the job waited for its walltime (an ERROR traceback
    about the full disk every few seconds in its log)."""
    cmd = launcher_cmd(
        "--memory-limit", "500MiB", "--local-directory", str(small_scratch),
        "--no-progress", str(script(FILL)), n=3,
    )  # fmt: skip
    result = run(cmd, env=PAUSED_TIMEOUT, timeout=90)
    assert "HELD" not in result.stdout
    assert_both_workers_left(
        result,
        r"paused for memory for \d+ s, holding the data of \d+ keys in memory that Dask "
        r"could not spill to disk \(its error above says why; [\d.]+ [KMi]*B free on "
        rf"{re.escape(str(small_scratch))}, where it spills\): give it more scratch space",
    )


CGROUPS = Path("/sys/fs/cgroup")


@pytest.fixture
def memory_cgroup():
    """The command prefix that starts a program in a cgroup laid out as Slurm's
    task/cgroup lays out a job's (v2, or v1's memory controller): the job's cgroup limited
    to 1.5 GiB, the program in a task cgroup below it without a limit of its own."""
    limit = 1536 * 1024**2
    controllers = CGROUPS / "cgroup.controllers"
    v2 = controllers.exists() and "memory" in controllers.read_text().split()
    job = (CGROUPS if v2 else CGROUPS / "memory") / f"launcher-test-{uuid.uuid4().hex[:8]}"
    task = job / "task_0"
    try:
        if v2:
            (CGROUPS / "cgroup.subtree_control").write_text("+memory")
        job.mkdir()
    except OSError as err:
        pytest.skip(f"cannot make a memory cgroup here ({err}): needs root and cgroups")
    try:
        if v2:
            (job / "memory.max").write_text(str(limit))
            if (job / "memory.swap.max").exists():  # only with swap accounting
                (job / "memory.swap.max").write_text("0")
        else:
            (job / "memory.limit_in_bytes").write_text(str(limit))
            if (job / "memory.memsw.limit_in_bytes").exists():  # only with swap accounting
                (job / "memory.memsw.limit_in_bytes").write_text(str(limit))
        task.mkdir()
        yield limit, ["sh", "-c", f'echo $$ > {task}/cgroup.procs && exec "$@"', "sh"]
    finally:
        deadline = time.monotonic() + 10
        for group in (task, job):
            while group.exists():  # the last processes leave a moment after they end
                try:
                    group.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


GRAB = """
from distributed import KilledWorker, get_client
client = get_client()
score = lambda: int(open("/proc/self/oom_score_adj").read())
print("SCORES", sorted(client.run(score).values()), score(), flush=True)
try:
    client.submit(lambda n: len(b"\\x01" * n), 2_000_000_000).result()
except KilledWorker as err:
    print("KILLED", type(err).__name__)
print("AFTER", client.submit(lambda: 42).result(), flush=True)
"""


def test_in_a_memory_cgroup_workers_are_sized_from_it_and_an_oom_kill_is_named(
    script, memory_cgroup
):
    """Slurm confines a job's memory with a cgroup: the derived limits divide it (read
    from the cgroup, not the node's RAM); a --memory-limit over it is named at the start,
    and the kernel's out-of-memory kill of a worker process, which distributed logs only
    as a hidden warning, is said in one line and the worker comes back, the ranks spared
    (the kernel's next kill, before the killed worker's memory was given back, took
    rank 0 in 1 run of 10 under load)."""
    limit, inside = memory_cgroup
    planned = run([*inside, *launcher_cmd("--plan")], timeout=60)
    assert planned.returncode == 0, planned
    assert json.loads(planned.stdout)["settings"]["memory_limit"]["value"] == limit // 4

    env = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    cmd = [*inside, *launcher_cmd("--memory-limit", "3GiB", "--no-progress", str(script(GRAB)))]
    result = run(cmd, env=env, timeout=120)
    assert_clean(result)
    assert "KILLED KilledWorker" in result.stdout and "AFTER 42" in result.stdout, result
    assert (
        "launcher: worker memory limits add up to 9.00 GiB on " in result.stderr.splitlines()[0]
    ), result
    assert "the job may use 1.50 GiB there" in result.stderr, result
    said = "its worker process was killed (SIGKILL: on a compute node most often the kernel's"
    assert said in result.stderr, result
    # Worker processes go first; a rank taken by a second kill ended the job (exit 9).
    assert "SCORES [500, 500, 500] 0" in result.stdout, result


SLEEPY = """
import os, time, dask
from distributed import get_client
client = get_client()
print("PIDS", os.getpid(), client.run_on_scheduler(os.getpid), flush=True)
dask.delayed(time.sleep)(600).compute()
"""


@pytest.mark.parametrize("victim", ["client", "scheduler"])
@pytest.mark.parametrize("layout", ["compact", "dedicated"])
def test_killing_the_scheduler_or_client_under_mpirun_ends_everything(script, layout, victim):
    job = start(launcher_cmd("--layout", layout, str(script(SLEEPY))))
    client, scheduler = map(int, job.wait_for_line("PIDS").split()[1:])
    os.kill(client if victim == "client" else scheduler, signal.SIGKILL)
    result = job.finish(timeout=30)
    assert result.returncode != 0 and not result.leftovers, result
    assert result.seconds < 60


@pytest.mark.parametrize("victim", ["client rank", "a worker rank"])
def test_under_other_mpis_a_killed_rank_ends_everything(script, tmp_path, other_mpi, victim):
    job, pids, _ = start_sleepy(script, tmp_path, mpi=other_mpi)  # client, scheduler, ranks
    os.kill(pids[0] if victim == "client rank" else pids[2], signal.SIGKILL)
    result = job.finish(timeout=30)
    assert result.returncode != 0 and not result.leftovers, result
    assert result.seconds < 60


def test_plain_tcp_and_a_foreign_certificate_are_refused(script, tmp_path):
    # A process of another user on the same node knocks on the scheduler, a worker and a
    # nanny: without the run's certificate it gets nowhere, with TLS or without.
    release = tmp_path / "release"
    addresses = script(f"""
import os, time
from distributed import get_client
client = get_client()
workers = client.scheduler_info()["workers"]
address = next(iter(workers))
print("ADDRESSES", client.scheduler.address, address, workers[address]["nanny"], flush=True)
while not os.path.exists({str(release)!r}):
    time.sleep(0.1)
print("STILL FINE", client.submit(sum, [1, 2]).result(), flush=True)
""")
    job = start(launcher_cmd(str(addresses)))
    targets = job.wait_for_line("ADDRESSES").split()[1:]
    try:
        knock = run(
            [PYTHON, "-m", "tests.knock", *targets],
            timeout=60,
            cwd=os.path.dirname(os.path.dirname(__file__)),
        )
    finally:
        release.touch()
    result = job.finish(timeout=60)
    assert_clean(result)
    assert "STILL FINE 3" in result.stdout
    assert knock.returncode == 0, knock
    assert knock.stdout.count("refused") == 3 * 2, knock  # 3 targets x 2 kinds of knock
    assert "accepted" not in knock.stdout, knock


def test_without_tls_a_foreign_process_gets_in(script, tmp_path):
    """The control experiment: the same knock succeeds against --insecure."""
    release = tmp_path / "release"
    addresses = script(f"""
import os, time
from distributed import get_client
print("ADDRESSES", get_client().scheduler.address, flush=True)
while not os.path.exists({str(release)!r}):
    time.sleep(0.1)
""")
    job = start(launcher_cmd("--insecure", str(addresses)))
    target = job.wait_for_line("ADDRESSES").split()[1]
    try:
        knock = run(
            [PYTHON, "-m", "tests.knock", target],
            timeout=60,
            cwd=os.path.dirname(os.path.dirname(__file__)),
        )
    finally:
        release.touch()
    assert_clean(job.finish(timeout=60))
    assert "plain: accepted" in knock.stdout, knock


def test_tls_without_cryptography_is_one_clear_line(tmp_path):
    fake = tmp_path / "no-cryptography" / "cryptography"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('cryptography is not installed')\n")
    env = {"PYTHONPATH": str(fake.parent)}
    result = run(launcher_cmd(), env=env)
    assert_clean(result, 2)
    assert result.stderr.count("needs the 'cryptography' package") == 1, result
    assert "--insecure" in result.stderr and "final result" not in result.stdout
    assert_clean(run(launcher_cmd("--insecure"), env=env))


@pytest.mark.parametrize("n", [4, None], ids=["mpirun", "single process"])
def test_a_local_directory_that_cannot_be_made_is_reported(tmp_path, n):
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    result = run(launcher_cmd("--local-directory", str(not_a_directory), n=n), timeout=90)
    assert_clean(result, 1)
    said = re.findall(r"^launcher: cannot create .*$", result.stderr, re.MULTILINE)
    assert len(said) == 1, result  # once, not once per worker rank of the node
    assert re.match(
        r"launcher: cannot create the job's local directory on \S+ .*a-file/dask-launcher-"
        r"\w+: Not a directory; point --local-directory",
        said[0],
    ), result
    assert "Error" not in result.stderr, result
    assert "final result" not in result.stdout and result.seconds < 60


def test_a_taken_dashboard_port_falls_back_and_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        summary = tmp_path / "summary.json"
        result = run(
            launcher_cmd("--dashboard-address", f"127.0.0.1:{port}", "--summary", str(summary))
        )
    assert_clean(result)
    assert result.stderr.count(f"dashboard address 127.0.0.1:{port} is taken; serving") == 1
    assert f":{port}/" not in json.loads(summary.read_text())["dashboard_url"]
    assert "UserWarning" not in result.stderr


# --- the same faults under srun, where one dead task does not end the others -----------


@pytest.fixture
def one(slurm_one, tmp_path):
    return Submitter(slurm_one, tmp_path)


@pytest.fixture
def three(slurm_three, tmp_path):
    return Submitter(slurm_three, tmp_path)


@pytest.mark.parametrize(
    ("layout", "victim"),
    [("compact", "client"), ("dedicated", "client"), ("dedicated", "scheduler")],
)
def test_killing_the_scheduler_or_client_under_srun_ends_the_job(one, layout, victim):
    kill_under_srun(one, layout, victim)


def test_under_other_mpis_a_killed_client_rank_under_srun_ends_the_job(one, other_mpi):
    """srun --kill-on-bad-exit ends the other tasks, whatever their MPI."""
    kill_under_srun(one, "compact", "client", env=other_mpi.srun_env)


def kill_under_srun(one, layout: str, victim: str, env: dict[str, str] | None = None) -> None:
    path = one.script("sleepy.py", SLEEPY)
    job = one.submit("--ntasks=4", args=["--layout", layout, path], env=env)
    pids = one.cluster.wait_for_output(job, r"^PIDS (\d+) (\d+)$")
    client, scheduler = int(pids.group(1)), int(pids.group(2))
    killed = time.monotonic()
    os.kill(client if victim == "client" else scheduler, signal.SIGKILL)
    state, exit_code = one.finish(job, timeout=60)
    assert time.monotonic() - killed < 30, job.text
    assert state == "FAILED" and exit_code != "0:0", job.text


@pytest.mark.parametrize(
    ("layout", "victim", "error"),
    [("compact", "client", "stopped answering"), ("dedicated", "scheduler", "cannot be reached")],
)
def test_without_kill_on_bad_exit_the_launcher_notices_by_itself(one, layout, victim, error):
    # srun as a user may call it by hand: no --kill-on-bad-exit, so a dead task does not
    # end the others. The client's heartbeat (or its lost scheduler) ends the job anyway.
    text = (JOBSCRIPTS / "saga.sh").read_text()
    assert "exec srun --kill-on-bad-exit=1 " in text
    jobscript = one.script("by-hand.sh", text.replace("--kill-on-bad-exit=1 ", ""))
    path = one.script("sleepy.py", SLEEPY)
    job = one.submit("--ntasks=4", jobscript=jobscript, args=["--layout", layout, path])
    pids = one.cluster.wait_for_output(job, r"^PIDS (\d+) (\d+)$")
    client, scheduler = int(pids.group(1)), int(pids.group(2))
    killed = time.monotonic()
    os.kill(client if victim == "client" else scheduler, signal.SIGKILL)
    state, exit_code = one.finish(job, timeout=90)
    assert time.monotonic() - killed < 60, job.text
    assert state == "FAILED" and exit_code != "0:0", job.text
    summary = one.summary(job)
    assert summary["status"] == "failed" and error in summary["error"], summary


def test_a_worker_killed_under_srun_is_restarted(one):
    path = one.script("kill.py", KILL_A_WORKER)
    job = one.submit("--ntasks=4", args=[path])
    victim = int(one.cluster.wait_for_output(job, r"^WORKERS (\d+)").group(1))
    one.cluster.wait_for_output(job, r"^STARTED$")
    os.kill(victim, signal.SIGKILL)
    assert one.finish(job) == ("COMPLETED", "0:0"), job.text
    assert "NEW WORKERS 1" in job.text


def test_workers_that_cannot_reach_the_scheduler_fail_the_job_in_time(three):
    # The scheduler listens on n1's loopback: the workers on n2 and n3 cannot reach it.
    job = three.submit(
        "--nodes=3",
        "--ntasks-per-node=2",
        "--ntasks=6",
        args=["--interface", "lo", "--startup-timeout", "8"],
    )
    state, exit_code = three.finish(job, timeout=60)
    assert (state, exit_code) == ("FAILED", "1:0"), job.text
    text = job.text
    assert re.search(
        r"(could not reach the scheduler at tls://127\.0\.0\.1:\d+|did not join "
        r"the scheduler at tls://127\.0\.0\.1:\d+)",
        text,
    ), text
    assert "interface lo" in text or "--interface (lo)" in text, text
    assert three.summary(job)["startup_seconds"] is None
