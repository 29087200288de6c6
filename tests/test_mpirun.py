"""The launcher under a real ``mpirun`` (MPICH from PyPI, 4 ranks oversubscribed on 2 cores).

Each test checks what a user sees (output, exit status, summary) and that no process of
the job outlives it.
"""

import ast
import hashlib
import json
import os
import py_compile
import re
import shlex
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from distributed.cluster_dump import load_cluster_dump

from tests.conftest import (
    MPIRUN,
    PRINT_MPI_LIBRARY,
    PROC_HELPERS,
    PROGRAM_WORLD,
    PYTHON,
    REPO,
    TASK_WORLD,
    late_rank_cmd,
    launcher_cmd,
    run,
    start,
)

NOISE = re.compile(r"CommClosedError|StreamClosedError|Traceback|distributed\.\w+ - (INFO|WARNING)")


def assert_clean(result, code=0):
    if result.returncode != code:
        pytest.fail(f"expected exit {code}\n{result}", pytrace=False)
    if result.leftovers:
        pytest.fail(f"processes outlived the job: {result.leftovers}\n{result}", pytrace=False)


def test_demo_prints_the_tutorial_result_quietly():
    result = run(launcher_cmd())
    assert_clean(result)
    assert "and the final result is: 20" in result.stdout
    assert not NOISE.search(result.output), result
    assert re.search(r"launcher: ok, exit 0; 3 worker\(s\)", result.stderr), result


WORKLOAD = """
import os, sys
import dask, dask.array as da, dask.dataframe as dd, pandas as pd
from distributed import Client, get_client
from mpi4py import MPI

assert __name__ == "__main__"
print("argv", sys.argv[1:])
client = Client()  # no arguments: the in-job cluster
info = client.scheduler_info()
print("workers at start", sorted(w["name"] for w in info["workers"].values()))
print("client rank", MPI.COMM_WORLD.Get_rank())
worker_pids = set(client.run(os.getpid).values())
assert os.getpid() not in worker_pids

@dask.delayed
def where(x):
    return os.getpid(), x + 1

pids, values = zip(*dask.compute(*[where(i) for i in range(8)]))
assert set(pids) <= worker_pids and sum(values) == 36
assert get_client().submit(lambda x: x * 3, 7).result() == 21
assert sum(client.gather(client.map(lambda x: x * 2, range(10)))) == 90
x = da.ones((2000, 2000), chunks=250)
assert x.sum().compute() == 4_000_000
df = dd.from_pandas(pd.DataFrame({"k": [i % 3 for i in range(300)], "v": range(300)}),
                    npartitions=6)
assert df.groupby("k").v.sum().compute().sum() == sum(range(300))
print("all good")
"""


def test_user_script_runs_unmodified_dask_code_on_the_workers(script):
    path = script(WORKLOAD)
    result = run(launcher_cmd(str(path), "first", "--second", "-v"))
    assert_clean(result)
    assert "argv ['first', '--second', '-v']" in result.stdout
    assert "workers at start [1, 2, 3]" in result.stdout
    assert "client rank 0" in result.stdout
    assert "all good" in result.stdout
    assert not NOISE.search(result.output), result


def test_dedicated_layout_is_scheduler_0_client_1_workers_2_up(script):
    path = script(WORKLOAD)
    result = run(launcher_cmd("--layout", "dedicated", str(path)))
    assert_clean(result)
    assert "workers at start [2, 3]" in result.stdout
    assert "client rank 1" in result.stdout
    assert "all good" in result.stdout


def test_module_target_runs_as_main(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "job.py").write_text(
        "import sys, dask\nif __name__ == '__main__':\n"
        "    print('module', sys.argv[1:], dask.delayed(sum)([1, 2]).compute())\n"
    )
    result = run(launcher_cmd("-m", "mypkg.job", "a", "b"), cwd=tmp_path)
    assert_clean(result)
    assert "module ['a', 'b'] 3" in result.stdout


def test_compiled_script_runs_as_python_runs_it(tmp_path):
    # python runs a .pyc given as the script; the syntax check before the start read
    # it as source and stopped the job ("SyntaxError: ... null bytes").
    source = tmp_path / "job.py"
    source.write_text(
        "import sys, dask\nprint('compiled', sys.argv[1:], dask.delayed(sum)([1, 2]).compute())\n"
    )
    compiled = tmp_path / "job.pyc"
    py_compile.compile(str(source), cfile=str(compiled), doraise=True)
    source.unlink()
    result = run(launcher_cmd(str(compiled), "a"), timeout=60)
    assert_clean(result)
    assert "compiled ['a'] 3" in result.stdout, result


def test_command_runs_as_main():
    # python -c's shape: sys.argv[0] is "-c", the code is the __main__ module, and a
    # function it defines reaches the workers by value.
    code = (
        "import sys\nfrom distributed import get_client\n"
        "def inc(x):\n    return x + 1\n"
        "print('command', __name__, sys.argv, get_client().submit(inc, 1).result())\n"
        "1 / 0\n"
    )
    result = run(launcher_cmd("-c", code, "a", "-v"))
    assert_clean(result, 1)
    assert "command __main__ ['-c', 'a', '-v'] 2" in result.stdout, result
    assert 'File "<string>", line 6, in <module>\nZeroDivisionError' in result.stderr, result


READS_STDIN = """
import hashlib, subprocess, sys
from mpi4py import MPI
print("client rank", MPI.COMM_WORLD.Get_rank(), flush=True)
first = subprocess.run(["dd", "bs=1", "count=11", "status=none"], stdout=subprocess.PIPE)
print("FIRST", first.stdout, flush=True)
data = sys.stdin.buffer.read()
print("REST", len(data), hashlib.sha256(data).hexdigest())
"""


@pytest.mark.parametrize("layout", ["compact", "dedicated"])
def test_the_script_reads_what_was_piped_into_mpirun(script, tmp_path, layout):
    """mpirun gives its standard input to rank 0, and the dedicated layout runs the
    script on rank 1: there hydra gave it a pipe that never ends (the job waited
    until the walltime), Open MPI gives it /dev/null. Programs the script starts read
    the same input."""
    body = os.urandom(20_000).hex().encode()  # hydra fails inputs over 64 KiB: LEFT
    (tmp_path / "input").write_bytes(b"first line\n" + body)
    with open(tmp_path / "input", "rb") as stdin:
        result = run(launcher_cmd("--layout", layout, str(script(READS_STDIN))), stdin=stdin)
    assert_clean(result)
    assert f"client rank {int(layout == 'dedicated')}" in result.stdout, result
    assert "FIRST b'first line\\n'" in result.stdout, result
    assert f"REST {len(body)} {hashlib.sha256(body).hexdigest()}" in result.stdout, result


LINES = """
import multiprocessing, sys
pool = multiprocessing.get_context("fork").Pool(1)  # forked while the input is open
print("READY", flush=True)
for line in sys.stdin:
    print("GOT", line.strip(), flush=True)
print("END OF INPUT")
pool.close()
pool.join()
"""


def test_the_script_reads_its_input_as_it_comes_and_a_job_ends_without_reading_it(script):
    """Through the dedicated layout's rank 0: a line typed into mpirun reaches the
    script at once, and its end too, also with a process the script forked before
    (which must not hold the input open); a script that does not read its input ends
    the job as usual while mpirun's input stays open (a terminal nobody types into)."""
    job = start(launcher_cmd("--layout", "dedicated", str(script(LINES))), stdin=subprocess.PIPE)
    job.wait_for_line("READY")
    for word in ("one", "two"):
        job.proc.stdin.write(f"{word}\n")
        job.proc.stdin.flush()
        job.wait_for_line(f"GOT {word}", timeout=10)
    job.proc.stdin.close()
    job.wait_for_line("END OF INPUT", timeout=10)
    assert_clean(job.finish(timeout=30))

    job = start(
        launcher_cmd("--layout", "dedicated", str(script("print('NOT READING')"))),
        stdin=subprocess.PIPE,
    )
    try:
        result = job.finish(timeout=30)
    finally:
        job.proc.stdin.close()
    assert_clean(result)
    assert "NOT READING" in result.stdout, result


LINEAGE = (
    PROC_HELPERS
    + """
import os
from distributed import get_client

def lineage():
    server = os.getppid()
    return os.getpid(), server, parent(server), cmdline(server) == cmdline(parent(server))

print(sorted(get_client().run(lineage).values()))
"""
)


def test_worker_processes_come_from_a_fork_of_their_rank(script):
    """launcher/forkserver.py: each worker rank forks its nanny's fork server from itself
    after importing distributed, so worker processes start without importing it again."""
    result = run(launcher_cmd(str(script(LINEAGE))))
    assert_clean(result)
    workers = ast.literal_eval(result.stdout.strip())
    assert len(workers) == 3
    for worker, server, rank, forked in workers:
        assert forked and len({worker, server, rank}) == 3, workers


PROFILING = """
import time
from distributed import get_client

def sampling(dask_worker):
    return dask_worker.periodic_callbacks["profile"].is_running()

def busy(seconds):
    end = time.time() + seconds
    while time.time() < end:
        sum(range(1000))

def until(want, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        seen = set(client.run(sampling).values())
        if seen == {want}:
            return True
        time.sleep(0.05)
    return False

client = get_client()
workers = list(client.scheduler_info()["workers"])
idle_before = until(False, 3)
tasks = [client.submit(busy, 5, workers=[w], pure=False, key=f"busy-{w}") for w in workers]
sampled_while_busy = until(True, 4)  # while every worker runs its task
client.gather(tasks)
idle_after = until(False, 3)
time.sleep(1.2)  # the profile keeps what was sampled once its 1-s cycle has turned
counts = {w: client.profile(workers=[w])["count"] for w in workers}
print(idle_before, sampled_while_busy, idle_after, min(counts.values()) > 0, counts)
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"]], ids=["nanny", "no-nanny"])
def test_workers_sample_the_profile_only_while_tasks_run(script, flags):
    """launcher/worker.py: an idle worker's event loop is not woken 100 times a second
    for Dask's profile, and the tasks it runs are profiled all the same."""
    result = run(launcher_cmd(*flags, str(script(PROFILING))))
    assert_clean(result)
    assert result.stdout.startswith("True True True True"), result


#: What Python 3.14's forkserver looks like to launcher/forkserver.py: it authenticates
#: its clients with a key, so a rank cannot fork the server from itself.
AUTHENTICATING_FORKSERVER = """
from multiprocessing import forkserver
forkserver._forkserver._forkserver_authkey = None
"""

ORIGIN = (
    PROC_HELPERS
    + """
import os
from distributed import get_client

def origin():
    import dask.config
    server = cmdline(os.getppid())
    ours = b"from multiprocessing.forkserver import main" in server
    return ours, b"launcher.preload" in server, hasattr(dask.config.refresh, "__wrapped__")

print(sorted(get_client().run(origin).values()))
"""
)


def test_where_a_rank_cannot_fork_the_server_multiprocessings_own_is_preloaded(script, tmp_path):
    """launcher/forkserver.py's fallback (Python 3.14, simulated through sitecustomize):
    worker processes come from multiprocessing's own fork server, which imported
    launcher/preload.py, so they have the launcher's speedups (here: the config refresh
    with libyaml); the job still ends clean."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(AUTHENTICATING_FORKSERVER)
    result = run(launcher_cmd(str(script(ORIGIN))), env={"PYTHONPATH": str(site)})
    assert_clean(result)
    workers = ast.literal_eval(result.stdout.strip())
    assert workers == [(True, True, True)] * 3, workers


RANK_CPU = """
import time
print("CPU", time.process_time())
"""


@pytest.mark.parametrize(("heavy_yield", "sleeps"), [(None, True), ("0", False)])
def test_ranks_waiting_in_mpi_init_for_a_late_rank_sleep(script, heavy_yield, sleeps):
    """MPICH polls in MPI_Init until every rank has arrived, burning a core per waiting
    rank; the launcher has it sleep between polls (bootstrap.MPI_ENVIRONMENT), unless
    the user's environment says otherwise. Rank 1 starts 5 s late: the client rank
    uses well under those 5 s of CPU meanwhile, or all of them when told to spin."""
    env = {} if heavy_yield is None else {"MPIR_CVAR_ENABLE_HEAVY_YIELD": heavy_yield}
    result = run(late_rank_cmd(2, 1, 5, str(script(RANK_CPU))), env=env)
    assert_clean(result)
    cpu = float(re.search(r"^CPU ([\d.]+)$", result.stdout, re.M).group(1))
    assert (cpu < 3.0) if sleeps else (cpu > 4.0), result


TRACKER = (
    PROC_HELPERS
    + """
import os
from distributed import get_client

def tracker():
    from multiprocessing import resource_tracker
    import _multiprocessing
    pid = resource_tracker._resource_tracker._pid
    forked = cmdline(pid) == cmdline("self")
    # A semaphore left behind, as by a worker killed before it cleaned up.
    name = f"/mp-launcher-test-{os.getpid()}"
    _multiprocessing.SemLock(1, 1, 1, name, False)  # closed, never unlinked
    resource_tracker.register(name, "semaphore")
    return parent(pid) == os.getpid(), forked, len(os.listdir(f"/proc/{pid}/fd")), name

print(sorted(get_client().run(tracker, nanny=True).values()))
"""
)


def test_a_ranks_resource_tracker_is_forked_and_still_cleans_up(script):
    """launcher/forkserver.py: the nanny's resource tracker is forked from its rank
    (not a fresh interpreter), holds only its pipe and stderr, and still removes what
    was left registered when the rank ends."""
    result = run(launcher_cmd(str(script(TRACKER))))
    assert_clean(result)
    ranks = ast.literal_eval(result.stdout.strip())
    assert len(ranks) == 3
    for child, forked, fds, name in ranks:
        assert child and forked and fds == 2, ranks
        assert not Path(f"/dev/shm/sem.{name[1:]}").exists(), name
    assert result.stderr.count("leaked semaphore objects") == 3, result


def test_single_process_without_mpirun(script):
    # The worker runs under a nanny, in a process of its own even here.
    path = script(WORKLOAD)
    result = run(launcher_cmd(str(path), n=None))
    assert_clean(result)
    assert "workers at start [0]" in result.stdout and "all good" in result.stdout
    assert "launcher: ok, exit 0; 1 worker(s)" in result.stderr


def test_single_process_works_without_any_mpi_library(script):
    path = script("import dask\nprint(dask.delayed(sum)([2, 3]).compute())\n")
    result = run(launcher_cmd(str(path), n=None), env={"MPI4PY_LIBMPI": "/nonexistent/lib.so"})
    assert_clean(result)
    assert result.stdout.strip() == "5"


END = "import time; print('END', time.time(), flush=True)\n"


@pytest.mark.parametrize(
    ("body", "code", "stderr_has"),
    [
        ("pass", 0, None),
        ("import sys; sys.exit(3)", 3, None),
        ("import sys; sys.exit(0)", 0, None),
        ("import sys; sys.exit('giving up')", 1, "giving up"),
        ("def inner():\n    raise ValueError('boom')\ninner()", 1, "ValueError: boom"),
    ],
)
@pytest.mark.parametrize("layout", ["compact", "dedicated"])
def test_exit_status_is_the_user_codes(script, body, code, stderr_has, layout):
    path = script(END + body + "\n")
    result = run(launcher_cmd("--layout", layout, str(path)))
    finished = time.time()
    assert_clean(result, code)
    if stderr_has:
        assert stderr_has in result.stderr
    if "raise" in body:
        assert result.stderr.count("Traceback (most recent call last)") == 1, result
        assert "runpy" not in result.stderr and "launcher/" not in result.stderr
        assert f'File "{path}", line 4, in <module>' in result.stderr
    ended = float(re.search(r"END (\S+)", result.stdout).group(1))
    assert finished - ended < 5, f"ranks took {finished - ended:.1f} s to exit\n{result}"


def test_summary_on_success_and_on_failure(script, tmp_path):
    # bad.json's directory is made, as distributed makes a performance report's.
    good, bad = tmp_path / "good.json", tmp_path / "results" / "bad.json"
    result = run(launcher_cmd("--summary", str(good)))
    assert_clean(result)
    data = json.loads(good.read_text())
    assert data["status"] == "ok" and data["exit_code"] == 0
    assert (data["mpi_size"], data["layout"], data["workers"]) == (4, "compact", 3)
    assert data["threads_per_worker"] == 1 and data["memory_limit_bytes"] > 0
    assert data["protocol"] == "tls" and data["scheduler_address"].startswith("tls://")
    assert data["dashboard_url"].startswith("http://") and data["dashboard_url"].endswith("/status")
    for key in ("startup_seconds", "run_seconds", "shutdown_seconds"):
        assert 0 <= data[key] < 60
    failing = script("raise SystemExit(4)\n")
    result = run(launcher_cmd("--summary", str(bad), "--no-dashboard", "--insecure", str(failing)))
    assert_clean(result, 4)
    data = json.loads(bad.read_text())
    assert data["status"] == "failed" and data["exit_code"] == 4 and data["dashboard_url"] is None
    assert data["protocol"] == "tcp" and data["scheduler_address"].startswith("tcp://")


def test_sizing_from_slurm_variables_reaches_the_workers(script, tmp_path):
    path = script(
        "from distributed import get_client\n"
        "info = get_client().scheduler_info()['workers'].values()\n"
        "print('sizes', sorted({(w['nthreads'], w['memory_limit']) for w in info}))\n"
        "dirs = get_client().run(lambda dask_worker: dask_worker.local_directory)\n"
        "print('dirs', sorted(dirs.values()))\n"
    )
    scratch = tmp_path / "localscratch"
    scratch.mkdir()
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_CPUS_PER_TASK": "2",
        "SLURM_MEM_PER_CPU": "512",
        "LOCALSCRATCH": str(scratch),
    }
    result = run(launcher_cmd(str(path)), env=env)
    assert_clean(result)
    assert f"sizes [(2, {2 * 512 * 1024**2})]" in result.stdout
    dirs = re.search(r"dirs \[(.*)\]", result.stdout).group(1)
    assert dirs.count(str(scratch / "dask-launcher-4242-")) == 3, result
    assert list(scratch.iterdir()) == [], "the job's scratch directory was not removed"


def test_local_directories_are_private_while_the_job_runs(script, tmp_path):
    path = script(
        "import os, stat\nfrom distributed import get_client\n"
        "dirs = get_client().run(lambda dask_worker: dask_worker.local_directory).values()\n"
        "for d in dirs:\n"
        "    top = d.split('/worker-')[0]\n"
        "    print('mode', oct(stat.S_IMODE(os.stat(top).st_mode)))\n"
    )
    result = run(launcher_cmd("--local-directory", str(tmp_path), str(path)))
    assert_clean(result)
    assert set(re.findall(r"mode (\S+)", result.stdout)) == {oct(stat.S_IRWXU)}


def test_interface_flag(script):
    path = script(
        "from distributed import get_client\nprint('addr', get_client().scheduler.address)\n"
    )
    result = run(launcher_cmd("--interface", "lo", str(path)))
    assert_clean(result)
    assert "addr tls://127.0.0.1:" in result.stdout


def test_missing_interface_lists_the_real_ones():
    result = run(launcher_cmd("--interface", "nosuch0"))
    assert_clean(result, 2)
    assert result.stderr.count("network interface 'nosuch0'") == 1
    assert "interfaces there: " in result.stderr and "lo" in result.stderr


def test_verbose_shows_dasks_logs():
    result = run(launcher_cmd("-v"))
    assert_clean(result)
    assert "distributed.scheduler - INFO" in result.stderr


def test_plan_under_mpirun_prints_once_and_starts_nothing():
    result = run(launcher_cmd("--plan", "--layout", "dedicated"))
    assert_clean(result)
    plan = json.loads(result.stdout)
    assert plan["mpi_size"] == 4 and plan["mpi_size_source"] == "MPI"
    assert [r["roles"] for r in plan["ranks"]] == [
        ["scheduler"],
        ["client"],
        ["worker"],
        ["worker"],
    ]
    assert "final result" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory-limit", "12XB"], "expected a memory size"),
        (["--nthreads", "0"], "expected a whole number >= 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_print_usage_once_and_exit_2(args, message):
    result = run(launcher_cmd(*args))
    assert_clean(result, 2)
    assert result.stderr.count("usage: python -m launcher") == 1, result
    assert result.stderr.count(message) == 1
    assert result.seconds < 30


def test_missing_script_and_module(tmp_path):
    result = run(launcher_cmd("no_such_script.py"), cwd=tmp_path)
    assert_clean(result, 2)
    assert result.stderr.count("can't open file") == 1
    assert str(tmp_path / "no_such_script.py") in result.stderr
    result = run(launcher_cmd("-m", "no_such_module_xyz"))
    assert_clean(result, 2)
    assert result.stderr.count("no module named 'no_such_module_xyz'") == 1
    result = run(launcher_cmd("-"), cwd=tmp_path)
    assert_clean(result, 2)
    assert result.stderr.count("launcher: a script from standard input ('-') is not") == 1
    (tmp_path / "no_main").mkdir()
    result = run(launcher_cmd("no_main"), cwd=tmp_path)
    assert_clean(result, 2)
    assert result.stderr.count(f"can't find '__main__' module in '{tmp_path / 'no_main'}'") == 1


def test_a_notebook_is_refused_with_how_to_export_it(script):
    path = script('{"cells": [], "nbformat": 4}', name="analysis.ipynb")
    result = run(launcher_cmd(str(path)))
    assert_clean(result, 2)
    line = f"launcher: {path} is a Jupyter notebook, not a Python script: run it with "
    line += f"'-m nbconvert --to notebook --execute {path}'"
    assert result.stderr.count(line) == 1, result
    assert "Traceback" not in result.stderr


def notebook(*cells: str) -> str:
    import nbformat

    made = nbformat.v4.new_notebook()
    made.cells = [nbformat.v4.new_code_cell(cell) for cell in cells]
    return nbformat.writes(made)


def cell_outputs(path: Path) -> list[str]:
    import nbformat

    done = nbformat.read(path, as_version=4)
    return [
        output.get("text") or output.get("data", {}).get("text/plain", "")
        for cell in done.cells
        for output in cell.get("outputs", [])
    ]


@pytest.mark.parametrize("fails", [False, True])
def test_a_notebook_runs_as_the_job_through_nbconvert(script, tmp_path, fails):
    """What the refusal above proposes: nbconvert's kernel is a process of the client
    rank, and its Client() connects to the job's cluster (TLS credentials and all)."""
    cells = [
        "from distributed import Client\nclient = Client()\n"
        "print(len(client.scheduler_info()['workers']), 'WORKERS')",
        "import dask.array as da\nint(da.ones((1000, 1000), chunks=250).sum().compute())",
    ]
    if fails:
        cells.append("raise ValueError('NOTEBOOK FAILED')")
    path = script(notebook(*cells), name="analysis.ipynb")
    summary = tmp_path / "summary.json"
    cmd = launcher_cmd("--summary", str(summary), "-m", "nbconvert", "--to", "notebook")
    result = run([*cmd, "--execute", str(path)], timeout=120)
    assert_clean(result, 1 if fails else 0)
    if fails:
        assert "NOTEBOOK FAILED" in result.stderr, result
        assert json.loads(summary.read_text())["status"] == "failed"
    else:
        outputs = cell_outputs(path.with_suffix(".nbconvert.ipynb"))
        assert outputs == ["3 WORKERS\n", "1000000"], result


def test_syntax_error_shows_its_traceback_once(script):
    path = script("x = (\n")
    result = run(launcher_cmd(str(path)))
    assert_clean(result, 1)
    assert result.stderr.count("SyntaxError") == 1 and str(path) in result.stderr
    assert "final result" not in result.stdout
    result = run(launcher_cmd("-c", "x = ("))
    assert_clean(result, 1)
    assert result.stderr.count('File "<string>", line 1\n    x = (\n') == 1, result
    assert "dashboard at" not in result.stderr  # nothing started


def tutorial_script() -> str:
    """The tutorial's SLURMCluster script, as docs/migration.md quotes it ("Before")."""
    text = (REPO / "docs" / "migration.md").read_text()
    before = text.split("Before (the tutorial's example", 1)[1]
    return before.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("kind", ["SLURMCluster", "LocalCluster"])
def test_a_cluster_started_by_the_script_is_refused_at_its_line(script, tmp_path, kind):
    # Left in, the tutorial's lines would submit worker jobs while the job's own
    # workers sit idle (and off Slurm compute() would wait forever): the script fails
    # at the line, before anything is submitted. sbatch on PATH only records a call.
    if kind == "SLURMCluster":
        path = script(tutorial_script())
    else:
        path = script(
            "from distributed import Client, LocalCluster\n\n"
            "cluster = LocalCluster(n_workers=2)\nclient = Client(cluster)\n"
        )
    bin_dir, submitted = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\ntouch {submitted}\nexit 1\n")
    sbatch.chmod(0o755)
    result = run(
        launcher_cmd(str(path)), env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=60
    )
    assert_clean(result, 1)
    refusal = (
        f"SecondCluster: {kind}(...) would start a second Dask cluster inside the "
        "launcher's job while this job's 3 worker(s) sit idle"
    )
    assert result.stderr.count(refusal) == 1, result
    assert re.search(rf'File "{path}", line \d+, in <module>\n +cluster = {kind}\(', result.stderr)
    assert not submitted.exists(), "sbatch was called"
    assert "final result" not in result.stdout


def test_waiting_for_more_workers_than_the_job_has_fails_at_once(script):
    # Left from a cluster.scale(4), this waited forever: no more workers will come.
    body = "from distributed import get_client\nc = get_client()\n"
    path = script(
        body + "c.wait_for_workers(3)\nprint('THREE', flush=True)\nc.wait_for_workers(4)\n"
    )
    result = run(launcher_cmd(str(path)), timeout=60)
    assert_clean(result, 1)
    assert "THREE" in result.stdout
    assert (
        result.stderr.count(
            "ValueError: wait_for_workers(4): this job has 3 worker(s), all joined before your "
            "script started, and no more will come"
        )
        == 1
    ), result


DASK_MPI_SCRIPTS = {
    "initialize": """
from dask_mpi import initialize
initialize()
from distributed import Client
print("RESULT", Client().submit(sum, [1, 2]).result())
""",
    "initialize-exit-false": """
from dask_mpi import initialize, send_close_signal
from distributed import Client
if initialize("lo", nthreads=4, exit=False):
    client = Client()
    print("RESULT", client.submit(sum, [1, 2]).result())
    send_close_signal()
    print("STILL UP", client.submit(sum, [3, 4]).result())
""",
    "execute": """
from dask_mpi import execute
from distributed import Client
def main(x, y):
    print("RESULT", Client().submit(sum, [x, y]).result())
execute(main, client_args=(1,), client_kwargs={"y": 2})
""",
    # the client script of dask-mpi's command line (mpirun dask-mpi --scheduler-file)
    "scheduler-file": """
from distributed import Client
client = Client(scheduler_file="scheduler.json")
print("RESULT", client.submit(sum, [1, 2]).result())
""",
}


@pytest.mark.parametrize("style", DASK_MPI_SCRIPTS)
def test_a_script_written_for_dask_mpi_runs_as_it_is(script, style):
    # Its initialize() on the client rank alone used to start a second scheduler and
    # wait in an MPI broadcast nobody else joined, until the walltime; its client of a
    # scheduler file waited for a file nobody writes.
    path = script(DASK_MPI_SCRIPTS[style])
    result = run(launcher_cmd(str(path)), timeout=60, cwd=path.parent)
    assert_clean(result)
    assert "RESULT 3" in result.stdout, result
    notice = "dask_mpi.initialize() in your script: the launcher's cluster is up already"
    if style == "initialize-exit-false":
        assert "STILL UP 7" in result.stdout, result
        assert result.stderr.count(notice) == 1, result
        assert "ignored: interface='lo', nthreads=4 (set these" in result.stderr, result
    elif style == "scheduler-file":
        assert (
            result.stderr.count(
                "Client(scheduler_file='scheduler.json') in your script connects to the "
                "launcher's cluster"
            )
            == 1
        ), result
        assert not (path.parent / "scheduler.json").exists()
    else:
        assert "ignored:" not in result.stderr, result


def test_a_laptops_client_with_local_cluster_arguments_gets_the_jobs_cluster(script):
    # Client(n_workers=...) makes a LocalCluster on a laptop; here distributed refused
    # the arguments ("Unexpected keyword arguments") and the script failed at that line.
    path = script(
        "from distributed import Client\n"
        "client = Client(n_workers=4, threads_per_worker=2)\n"
        "workers = len(client.scheduler_info()['workers'])\n"
        "print('RESULT', workers, client.submit(sum, [1, 2]).result())\n"
    )
    result = run(launcher_cmd(str(path)), timeout=60)
    assert_clean(result)
    assert "RESULT 3 3" in result.stdout, result
    notice = (
        "launcher: Client() in your script: the launcher's cluster is up already; "
        "ignored: n_workers=4, threads_per_worker=2 (set these with launcher flags"
    )
    assert result.stderr.count(notice) == 1, result


CHILD_CLIENT = """
import subprocess, sys
from distributed import get_client
print("PARENT", sorted(get_client().scheduler_info()["workers"]), flush=True)
code = (
    "from distributed import Client; client = Client(timeout=20); "
    "print('CHILD', sorted(client.scheduler_info()['workers']), "
    "client.submit(sum, [1, 2]).result())"
)
subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
"""


def test_processes_the_script_starts_connect_to_the_jobs_cluster(script):
    # A Jupyter server as the target (-m jupyterlab) or a step run with subprocess:
    # their Client() made a LocalCluster on the client rank's cores, as no address (nor,
    # with TLS, credentials) reached them.
    result = run(launcher_cmd(str(script(CHILD_CLIENT))), timeout=90)
    assert_clean(result)
    parent = re.search(r"^PARENT (\[.*\])$", result.stdout, re.MULTILINE)
    assert parent and parent[1].count("tls://") == 3, result
    assert f"CHILD {parent[1]} 3" in result.stdout, result


def test_client_shutdown_in_the_script_closes_only_its_client(script):
    # It used to close the scheduler under the launcher's own client (a 30-line
    # reconnect traceback at the end) and leave the rest of the script no cluster.
    path = script(
        """
from distributed import Client
client = Client()
print("RESULT", client.submit(sum, [1, 2]).result())
client.shutdown()
print("STILL UP", Client().submit(sum, [3, 4]).result())
"""
    )
    result = run(launcher_cmd(str(path)), timeout=60)
    assert_clean(result)
    assert "RESULT 3" in result.stdout and "STILL UP 7" in result.stdout, result
    assert not NOISE.search(result.output), result


@pytest.mark.parametrize("layout", ["compact", "dedicated"])
def test_scheduler_plugins_close_while_the_workers_are_there(script, tmp_path, layout):
    # distributed closes its scheduler's plugins before its workers, and plugins count
    # on it: closed after the workers (the launcher's order), the nanny plugin of
    # PipInstall(restart_workers=True) was unregistered from nannies that were gone,
    # 30 s of connection retries, and a job that had succeeded failed with MPI_Abort
    # past the shutdown timeout; ClusterDump wrote an empty file.
    dump = tmp_path / "dump.msgpack.gz"
    path = script(
        f"""
from distributed import Client
from distributed.diagnostics.cluster_dump import ClusterDump
from distributed.diagnostics.plugin import InstallPlugin

client = Client()
client.register_plugin(InstallPlugin(lambda: None, restart_workers=True))
client.register_plugin(ClusterDump(url={str(dump)!r}))
print("RESULT", client.submit(sum, [1, 2]).result())
"""
    )
    result = run(launcher_cmd("--layout", layout, str(path)), timeout=60)
    assert_clean(result)
    assert "RESULT 3" in result.stdout, result
    assert "shutdown timeout" not in result.stderr, result
    # the dump has every worker's state
    workers = load_cluster_dump(str(dump))["workers"]
    assert len(workers) == (3 if layout == "compact" else 2), (workers, result)


def test_a_scheduler_plugin_that_fails_or_hangs_at_close_does_not_fail_the_job(script):
    path = script(
        """
import asyncio
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin

class Stuck(SchedulerPlugin):
    name = "stuck-plugin"
    async def close(self):
        await asyncio.sleep(3600)

class Failing(SchedulerPlugin):
    name = "failing-plugin"
    async def before_close(self):
        raise RuntimeError("failing in before_close")

client = Client()
client.register_plugin(Stuck())
client.register_plugin(Failing())
print("RESULT", client.submit(sum, [1, 2]).result())
"""
    )
    result = run(launcher_cmd(str(path)), timeout=60)
    assert_clean(result)
    assert "RESULT 3" in result.stdout, result
    assert "RuntimeError: failing in before_close" in result.stderr, result
    assert (
        "launcher: scheduler plugin(s) stuck-plugin did not close within the shutdown "
        "timeout (3 s); the job ends without waiting for them"
    ) in result.stderr, result
    assert "launcher: ok, exit 0" in result.stderr, result


@pytest.mark.parametrize(
    ("flags", "form"),
    [
        ([], "file"),
        (["--no-nanny"], "file"),
        (["--layout", "dedicated"], "file"),  # the scheduler unpickles the graph too
        ([], "directory"),
        ([], "zip"),
    ],
)
def test_functions_from_a_module_beside_the_script_run_on_the_workers(tmp_path, flags, form):
    # Run from another directory, as sbatch from $HOME would. The workers unpickle such
    # a function by importing its module; without the script's directory on their
    # sys.path (where python and dask-mpi put it) every worker closed and the job hung.
    # As python does, a directory or zip file with a __main__.py runs too, importing
    # from inside itself.
    folder = tmp_path / "analysis"
    folder.mkdir()
    (folder / "helpers.py").write_text("def square(x):\n    return x * x\n")
    main = "__main__.py" if form != "file" else "main.py"
    (folder / main).write_text(
        "import sys\n"
        "from distributed import Client\n"
        "from helpers import square\n"
        "client = Client()\n"
        "print('RESULT', sum(client.gather(client.map(square, range(10)))), sys.argv)\n"
    )
    target = {"file": "analysis/main.py", "directory": "analysis", "zip": "analysis.zip"}[form]
    if form == "zip":
        shutil.make_archive(str(tmp_path / "analysis"), "zip", folder)
        shutil.rmtree(folder)
    result = run(launcher_cmd(*flags, target, "x"), cwd=tmp_path, timeout=60)
    assert_clean(result)
    assert f"RESULT 285 [{target!r}, 'x']" in result.stdout, result


def test_what_a_nanny_plugin_sets_in_its_environment_reaches_the_restarted_workers(script):
    # Workers started by distributed's nanny inherit its environment; the launcher's
    # come from a fork server that had the rank's environment before the nanny, and a
    # restart=True NannyPlugin's os.environ[...] = ... did not reach them.
    path = script(
        """
import os
from distributed import Client, NannyPlugin
from distributed.diagnostics.plugin import Environ

class SetVariables(NannyPlugin):
    restart = True
    def setup(self, nanny):
        os.environ["LAUNCHER_TEST_FROM_NANNY"] = "nanny"
        os.environ["LAUNCHER_TEST_BOTH"] = "nanny"

def seen():
    return os.environ.get("LAUNCHER_TEST_FROM_NANNY"), os.environ.get("LAUNCHER_TEST_BOTH")

client = Client()
before = client.run(seen)
client.register_plugin(Environ({"LAUNCHER_TEST_BOTH": "environ"}))
client.register_plugin(SetVariables())
print("SEEN", sorted(before.values()), sorted(set(client.run(seen).values())))
"""
    )
    result = run(launcher_cmd(str(path)), timeout=60)
    assert_clean(result)
    # as distributed ranks them: what the nanny was given (Environ) over what it has
    nobody, expected = (None, None), ("nanny", "environ")
    assert f"SEEN {[nobody] * 3} {[expected]}" in result.stdout, result


SCRIPT_SETUP = """
import os, sys
sys.path.insert(0, "front")
sys.path.append(os.path.abspath("back"))
os.environ["HDF5_USE_FILE_LOCKING"] = "FALSE"
del os.environ["LAUNCHER_TEST_GONE"]
from first import square
from last import half
from distributed import Client

def seen():
    front, back = os.path.abspath("front"), os.path.abspath("back")
    return (
        sys.path.index(front),
        len(sys.path) - sys.path.index(back),
        os.environ.get("HDF5_USE_FILE_LOCKING"),
        os.environ.get("LAUNCHER_TEST_GONE"),
    )

client = Client()
print("SEEN", sorted(set(client.run(seen).values())))  # client.run passes them on too
print("RESULT", sum(client.gather(client.map(square, range(10)))), client.submit(half, 8).result())
os.environ["LAUNCHER_TEST_LATER"] = "set later"  # a second change
print("LATER", set(client.run(os.environ.get, "LAUNCHER_TEST_LATER").values()))
if "--restart" in sys.argv:
    client.restart()
    print("AGAIN", sum(client.gather(client.map(square, range(4)))))
    print("SEEN AGAIN", sorted(set(client.run(seen).values())))
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"], ["--layout", "dedicated"]])
def test_what_the_script_sets_up_in_sys_path_and_environ_reaches_the_workers(tmp_path, flags):
    # Scripts import their own code after sys.path.insert(0, "../src") and set variables
    # for their tasks' libraries; under dask-mpi every rank ran those lines, and a
    # LocalCluster's workers started after them. Here the workers could not unpickle a
    # task from "front" and closed (distributed #1341): the job failed. The workers get
    # the changes before the graph (directories in front or at the end as in the
    # script), also after a restart.
    for folder, module, body in (("front", "first", "x * x"), ("back", "last", "x // 2")):
        (tmp_path / folder).mkdir()
        name = "square" if module == "first" else "half"
        (tmp_path / folder / f"{module}.py").write_text(f"def {name}(x):\n    return {body}\n")
    (tmp_path / "main.py").write_text(SCRIPT_SETUP)
    args = [] if flags else ["--restart"]
    result = run(
        launcher_cmd(*flags, "main.py", *args),
        cwd=tmp_path,
        env={"LAUNCHER_TEST_GONE": "set before the job"},
        timeout=60,
    )
    assert_clean(result)
    assert "RESULT 285 4" in result.stdout, result
    assert "SEEN [(0, 1, 'FALSE', None)]" in result.stdout, result
    assert "LATER {'set later'}" in result.stdout, result
    assert "Warning" not in result.stderr, result  # distributed's on a replaced plugin
    assert flags or "AGAIN 14\nSEEN AGAIN [(0, 1, 'FALSE', None)]" in result.stdout, result


CHDIR = """
import os
from distributed import Client
os.makedirs("data", exist_ok=True)
with open("data/numbers.txt", "w") as f:
    f.write("1 2 3")
os.chdir("data")

def total(name):
    with open(name) as f:
        return sum(map(int, f.read().split()))

client = Client()
print("TOTAL", client.submit(total, "numbers.txt").result())
print("SAME", set(client.run(os.getcwd).values()) == {os.getcwd()})
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"]])
def test_the_scripts_working_directory_reaches_the_workers(tmp_path, flags):
    # os.chdir(...) at the top of a script, so that relative paths find the data: the
    # workers, started before it, opened "numbers.txt" where the job started. And the
    # launcher's own relative paths stay where the command was given (the summary
    # landed in data/).
    (tmp_path / "main.py").write_text(CHDIR)
    cmd = launcher_cmd(*flags, "--summary", "summary.json", "main.py")
    result = run(cmd, cwd=tmp_path, timeout=60)
    assert_clean(result)
    assert "TOTAL 6\nSAME True" in result.stdout, result
    assert (tmp_path / "summary.json").exists() and not (
        tmp_path / "data" / "summary.json"
    ).exists()


DAEMON = """
import multiprocessing, os
import dask
from distributed import get_client
dask.config.set({"distributed.worker.daemon": False, "array.chunk-size": "64MiB"})
dask.config.set(distributed__scheduler__allowed_failures=10)
dask.config.set({"distributed.worker.daemon": False})
dask.config.set({"distributed.worker.resources": {"GPU": 1}})
with dask.config.set(scheduler="sync"):
    print("LOCAL", dask.delayed(os.getpid)().compute() == os.getpid())
dask.config.set(scheduler="threads")

def starts_a_process():
    child = multiprocessing.get_context("fork").Process(target=print)
    child.start()
    child.join()
    return child.exitcode

print("RESULT", get_client().submit(starts_a_process).result())
print("GPU", get_client().submit(abs, -1, resources={"GPU": 1}).result())
"""


def test_settings_the_cluster_cannot_follow_are_said_with_what_to_do(script):
    # At the top of a dask-mpi or LocalCluster script they reached the cluster started
    # after them; here it started before, and they were silently without effect (a
    # task starting a process failed: "daemonic processes are not allowed to have
    # children"). The line names the variable that does reach it: try them. (Dask
    # lowers the names in a variable's name: a resource GPU goes in a dict.)
    path = str(script(DAEMON))
    result = run(launcher_cmd(path), timeout=60)
    assert_clean(result, 1)
    said = re.findall(
        r"^launcher: dask\.config\.set\((.*?)\) in your script .* \((.*) in",
        result.stderr,
        re.MULTILINE,
    )
    assert said == [
        ("distributed.worker.daemon=False", "export DASK_DISTRIBUTED__WORKER__DAEMON=False"),
        (
            "distributed.scheduler.allowed_failures=10",
            "export DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=10",
        ),
        (
            "distributed.worker.resources={'GPU': 1}",
            "export DASK_DISTRIBUTED__WORKER__RESOURCES=\"{'GPU': 1}\"",
        ),
    ], result
    assert "daemonic processes are not allowed to have children" in result.stderr, result
    # A laptop's local scheduler leaves the job's workers idle: said once.
    assert "LOCAL True" in result.stdout, result
    notice = "launcher: dask.config.set(scheduler='sync') in your script: Dask computes in"
    assert result.stderr.count(notice) == 1 and "scheduler='threads'" not in result.stderr
    exports = dict(shlex.split(export)[1].split("=", 1) for _, export in said)
    result = run(launcher_cmd(path), env=exports, timeout=60)
    assert_clean(result)
    assert "RESULT 0" in result.stdout and "GPU 1" in result.stdout, result


AS_IT_GOES = """
import os, sys, time
from distributed import get_client
print("FIRST")
get_client().submit(print, "TASK", pure=False).result()
deadline = time.monotonic() + 30
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.05)
print("SEEN" if os.path.exists(sys.argv[1]) else "NOT SEEN")
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"]])
def test_what_the_script_and_its_tasks_print_reaches_the_log_as_it_goes(script, tmp_path, flags):
    # stdout is a pipe under mpirun and srun, which Python filled in 8 KiB blocks: the
    # script's lines came at its end and a task's after them. The test waits for both
    # lines before it lets the script end. (PYTHONUNBUFFERED, which would hide that,
    # is emptied: Python ignores it empty.)
    flag = tmp_path / "go"
    job = start(
        launcher_cmd(*flags, str(script(AS_IT_GOES)), str(flag)), env={"PYTHONUNBUFFERED": ""}
    )
    job.wait_for_line("FIRST", timeout=20)
    job.wait_for_line("TASK", timeout=20)
    flag.touch()
    result = job.finish(timeout=60)
    assert_clean(result)
    assert result.stdout.index("TASK") < result.stdout.index("SEEN"), result


PRINTS_ON_WORKERS = """
import distributed
from distributed import Client, get_client

def speak(word):
    distributed.print("PRINTED", word)
    distributed.warn("WARNED " + word)

def speak_through_a_worker_client(word):
    return get_client().submit(speak, word, pure=False).result()

client = Client()  # the script's own, beside the launcher's
client.submit(speak, "from a task", pure=False).result()
client.submit(speak_through_a_worker_client, "from a subtask", pure=False).result()
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"]])
def test_distributed_print_in_a_task_comes_out_once(script, flags):
    """distributed.print prints on the worker and again in every client: all of them
    print into the job's log, so the line came out three times (the worker, the
    launcher's client and the script's), and once more for a worker's client."""
    result = run(launcher_cmd(*flags, str(script(PRINTS_ON_WORKERS)), n=3), timeout=60)
    assert_clean(result)
    for word in ("from a task", "from a subtask"):
        assert result.stdout.count(f"PRINTED {word}") == 1, result
        assert result.stderr.count(f"WARNED {word}") == 1, result


WORKER_PROCESS = """
import os
from distributed import Client
from threadpoolctl import threadpool_info

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20

def facts():
    blas = max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
    # Freed memory goes back to the system only under a fixed trim threshold: glibc's
    # dynamic one (raised by the first freed 1-MiB block) keeps the next ones.
    one = bytearray(1 << 20)
    del one
    before = rss_mib()
    blocks = [bytearray(1 << 20) for _ in range(200)]
    last = blocks[-1]
    del blocks
    return blas, rss_mib() - before, len(last)

print("FACTS", sorted(Client().run(facts).values()))
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"]])
def test_workers_start_as_distributeds_nanny_starts_them(script, flags):
    # distributed.nanny.pre-spawn-environ: one BLAS thread per worker process and a
    # fixed malloc trim threshold. Forked from the fork server they had neither (a BLAS
    # thread per core each, and freed memory kept), nor had --no-nanny worker ranks.
    result = run(launcher_cmd(*flags, str(script(WORKER_PROCESS))), timeout=60)
    assert_clean(result)
    facts = re.search(r"FACTS (.*)", result.stdout)
    assert facts, result
    workers = ast.literal_eval(facts[1])
    assert len(workers) == 3, result
    for blas, kept_mib, _ in workers:
        assert blas == 1, result
        assert kept_mib < 50, result


GPUS = """
import os, subprocess
from distributed import Client

def visible():
    program = subprocess.run(["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"], capture_output=True)
    return os.environ["CUDA_VISIBLE_DEVICES"], program.stdout.decode().strip()

def resources(dask_worker):
    return dask_worker.state.total_resources

client = Client()
print("WORKERS", sorted(client.run(visible).values()))
print("CLIENT", os.environ["CUDA_VISIBLE_DEVICES"])
print("RESOURCES", list(client.run(resources).values()))
print("ON A GPU", client.submit(visible, resources={"GPU": 1}).result(timeout=30))
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"]])
def test_each_worker_gets_its_share_of_the_nodes_gpus(script, flags):
    # As under Slurm's --gpus-per-node: every rank sees all of the node's GPUs, and
    # every worker used the first.
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2"}
    result = run(launcher_cmd(*flags, str(script(GPUS))), env=env, timeout=60)
    assert_clean(result)
    assert "WORKERS [('0', '0'), ('1', '1'), ('2', '2')]" in result.stdout, result
    assert "CLIENT 0,1,2" in result.stdout, result  # the script's rank: as it was
    # A dask-jobqueue GPU worker's --resources GPU=1, declared for each GPU
    assert "RESOURCES [{'GPU': 1}, {'GPU': 1}, {'GPU': 1}]" in result.stdout, result
    assert re.search(r"ON A GPU \('([012])', '\1'\)", result.stdout), result


SLEEPING_POOL = """
import multiprocessing, subprocess, time

def square(x):
    return x * x

def leave_a_sleeping_pool(method):
    with multiprocessing.get_context(method).Pool(2) as pool:
        total = sum(pool.map(square, range(10)))
        pool.map_async(time.sleep, [30, 30])
        time.sleep(0.5)  # both workers asleep in a task when the block ends
    program = subprocess.Popen(["sleep", "30"])
    program.terminate()
    return total, program.wait(timeout=10)
"""


@pytest.mark.parametrize(
    "where, method, n",
    [
        ("script", "fork", 4),
        ("script", "spawn", 4),
        ("script", "forkserver", None),
        ("task", "fork", 4),
        ("task under a nanny", "fork", 3),
        ("task under a nanny", "forkserver", 3),
        ("task under a nanny", "spawn", 3),
    ],
)
def test_a_multiprocessing_pool_ends_quietly(tmp_path, where, method, n):
    # Leaving "with Pool()" sends its workers SIGTERM. Forked with the launcher's
    # handler they said the job was ending and printed an Interrupted traceback each;
    # forked from a worker rank (a task's pool under --no-nanny) they even told the
    # client rank over MPI, which ended the job as interrupted (exit 143); from the
    # launcher's fork server (one process) they ignored it and the job hung. A spawned
    # pool's semaphores were reported leaked at the end. In a nanny's worker process
    # (daemon false, as tasks that start processes need) a pool through a fork server
    # waited forever for the lock of the launcher's own, held since it was forked, and
    # every process a task started ignored SIGTERM, as the worker process did: the
    # pool and the program outlived terminate() and the task never returned.
    (tmp_path / "pools.py").write_text(SLEEPING_POOL)
    call = f"leave_a_sleeping_pool({method!r})"
    if where != "script":
        call = f"__import__('distributed').Client().submit(leave_a_sleeping_pool, {method!r})"
        call += ".result()"
    (tmp_path / "main.py").write_text(
        f"from pools import *\nif __name__ == '__main__':\n    print('POOL', {call})\n"
    )
    flags = ["--no-nanny"] if where == "task" else []
    env = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}  # a nanny's worker is daemonic
    cmd = launcher_cmd(*flags, str(tmp_path / "main.py"), n=n)
    result = run(cmd, timeout=60, env=env if where == "task under a nanny" else None)
    assert_clean(result)
    assert "POOL (285, -15)" in result.stdout, result
    assert "SIGTERM" not in result.stderr and not NOISE.search(result.output), result
    assert "leaked" not in result.stderr, result


PROGRAM_IN_A_TASK = """
import os, signal, subprocess, sys, time
import psutil
from distributed import get_client

def run_a_program():
    return subprocess.run(["sleep", "300"]).returncode

def programs():
    token = os.environ["LAUNCHER_TEST_TOKEN"]
    found = psutil.process_iter(["cmdline", "environ"])
    return sum(
        p.info["cmdline"] == ["sleep", "300"]
        and (p.info["environ"] or {}).get("LAUNCHER_TEST_TOKEN") == token
        for p in found
    )

def started():
    while not programs():
        time.sleep(0.05)

client = get_client()
running = client.submit(run_a_program)
started()
if sys.argv[1] == "kill":
    (busy,) = [worker for worker, tasks in client.processing().items() if tasks]
    os.kill(client.run(os.getpid, workers=[busy])[busy], signal.SIGKILL)
    while client.processing().get(busy) or not any(client.processing().values()):
        time.sleep(0.05)  # until the task runs again (on the other worker)
    started()
    time.sleep(0.5)
print("PROGRAMS", programs(), running.status)
"""


@pytest.mark.parametrize("flags, how", [((), "end"), (("--no-nanny",), "end"), ((), "kill")])
def test_programs_a_task_started_end_with_its_worker(script, flags, how):
    """A program a task ran (subprocess) outlived its worker process when the job ended
    during the task, or when the process was killed (out of memory), and held the
    rank's output: mpirun waited for it after the job's result (here 300 s), and the
    killed worker's program kept running beside the task's retry."""
    result = run(launcher_cmd(*flags, str(script(PROGRAM_IN_A_TASK)), how, n=3), timeout=60)
    assert_clean(result)
    assert "PROGRAMS 1 pending" in result.stdout, result


SETS_ITS_START_METHOD = """
import multiprocessing

def square(x):
    return x * x

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    with multiprocessing.Pool(2) as pool:
        print("SQUARES", pool.map(square, range(4)), multiprocessing.get_start_method())
    from distributed import get_client
    print("TASK", get_client().submit(square, 5).result())
"""


@pytest.mark.parametrize("n", [None, 3])
def test_the_script_sets_multiprocessings_start_method_as_under_python(script, n):
    """In one process the nanny's worker, started through the fork server before the
    script, had fixed the default start method: the script's set_start_method("spawn")
    at its top raised "context has already been set"."""
    result = run(launcher_cmd(str(script(SETS_ITS_START_METHOD)), n=n), timeout=60)
    assert_clean(result)
    assert "SQUARES [0, 1, 4, 9] spawn" in result.stdout and "TASK 25" in result.stdout, result


def test_the_job_waits_for_the_threads_the_script_started_as_python_does(script):
    # The script's end used to end the job at once, cutting off a background thread
    # that was still computing and writing its results.
    path = script(
        "import sys, threading, time\n"
        "from distributed import Client\n"
        "client = Client()\n"
        "def finish():\n"
        "    time.sleep(1)\n"
        "    print('WROTE', client.submit(sum, [1, 2]).result())\n"
        "threading.Thread(target=finish).start()\n"
        "print('MAIN DONE', flush=True)\n"
        "sys.exit(3)\n"
    )
    result = run(launcher_cmd(str(path)), timeout=60)
    assert_clean(result, 3)
    assert "MAIN DONE\nWROTE 3\n" in result.stdout, result
    assert "waits for its thread" not in result.stderr, result  # named after 5 s only
    assert not NOISE.search(result.output), result


LEAVES_POOLS_OPEN = """
import concurrent.futures, multiprocessing, sys, time
from joblib import Parallel, delayed

def write_later(path, seconds):
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write("written")

pool = concurrent.futures.ProcessPoolExecutor(1)
pool.submit(write_later, sys.argv[1], 1)  # queued work of a pool left open
print("JOBLIB", Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4)), flush=True)
manager = multiprocessing.Manager()
print("MAIN DONE", flush=True)
"""


@pytest.mark.parametrize("n", [4, None])
def test_the_job_ends_after_the_pools_the_script_left_open_as_python_does(script, tmp_path, n):
    """Python's exit shuts executors down (a ProcessPoolExecutor's, joblib's loky)
    before it joins the threads, once their queued work is done: their manager threads,
    no daemons, kept the job waiting until its walltime."""
    out = tmp_path / "out"
    result = run(launcher_cmd(str(script(LEAVES_POOLS_OPEN)), str(out), n=n), timeout=60)
    assert_clean(result)
    assert "JOBLIB [0, 1, 2, 3]" in result.stdout and "MAIN DONE" in result.stdout, result
    assert out.read_text() == "written", result
    assert "waits for its threads" not in result.stderr, result
    # Python's exit unlinks the semaphores of loky's pool; its tracker warned after the job.
    assert "leaked semlock" not in result.stderr, result


LEAVES_PROCESSES = """
import multiprocessing, sys, time
from distributed import Client

def write_later(path):
    time.sleep(1)
    with open(path, "w") as f:
        f.write("written")
    print("CHILD DONE", file=sys.stderr, flush=True)

client = Client()
shared = multiprocessing.Manager().dict()  # an open Manager: its process is no daemon
manager = multiprocessing.Manager()
multiprocessing.Process(target=write_later, args=(sys.argv[1],)).start()
print("MAIN DONE", flush=True)
"""


@pytest.mark.parametrize("n", [4, None])
def test_the_job_waits_for_the_processes_the_script_started_as_python_does(script, tmp_path, n):
    """Python's exit shuts down the open Managers, then joins the processes that are no
    daemons; the job ended first (its summary came before the child's last line, and
    under srun the step's end killed the child before it wrote its file)."""
    out = tmp_path / "out"
    env = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}  # one process: the nanny's is not
    result = run(launcher_cmd(str(script(LEAVES_PROCESSES)), str(out), n=n), env=env, timeout=60)
    assert_clean(result)
    assert out.read_text() == "written", result
    done, summary = result.stderr.find("CHILD DONE"), result.stderr.find("launcher: ok, exit 0")
    assert 0 <= done < summary, result
    assert "waits for its processes" not in result.stderr, result  # named after 5 s only


EXIT_FUNCTIONS = """
import atexit, sys
from distributed import Client
client = Client()
atexit.register(lambda: print("SAVED", client.submit(sum, [1, 2]).result(), flush=True))
def fails():
    raise ValueError("broken exit function")
atexit.register(fails)
atexit.register(print, "UNREGISTERED")
atexit.unregister(print)
atexit.register(print, "LAST", flush=True)
sys.exit(4)
"""


def test_exit_functions_of_the_script_run_as_under_python(script):
    # The launcher's process ends without Python's exit, and these never ran: what the
    # script saved at exit was lost.
    result = run(launcher_cmd(str(script(EXIT_FUNCTIONS))), timeout=60)
    assert_clean(result, 4)
    assert "LAST\nSAVED 3\n" in result.stdout, result
    assert "UNREGISTERED" not in result.stdout, result
    assert result.stderr.count("Exception ignored in atexit callback <function fails") == 1
    assert "ValueError: broken exit function" in result.stderr, result


LEAVES_ITS_RESULTS = """
import multiprocessing, sys, threading, time
from distributed import Client, wait


class Freed:
    def __del__(self):
        print("FREED with the client", self.client.status, flush=True)


client = Client()
data = client.scatter(list(range(2000)))
futures = client.map(lambda x: x + 1, data[:300])
wait(futures)
# A daemon thread that still holds the results when the job ends.
threading.Thread(target=lambda held: time.sleep(60), args=((data, futures),), daemon=True).start()
multiprocessing.Process(target=time.sleep, args=(300,), daemon=True).start()
out = open(sys.argv[1], "w")  # never closed
out.write("written")
freed = Freed()
freed.client = client
print("END", flush=True)
if sys.argv[2] == "raise":
    raise ValueError("failed with its results held")
"""


@pytest.mark.parametrize("layout, end, code", [("compact", "return", 0), ("dedicated", "raise", 1)])
def test_what_the_script_leaves_goes_as_at_pythons_exit(script, tmp_path, layout, end, code):
    # Workers closing under results a client still held made the scheduler recompute
    # them on the workers left and log "caused the cluster to lose" (with 50,000
    # futures: seconds of it, past the shutdown timeout, and a job that had succeeded
    # failed). The script's objects were freed before the clients closed, or never,
    # and a file it had not closed came out empty. A daemonic process, which Python's
    # exit terminates, ran on, and mpirun waited for it.
    summary, out = tmp_path / "summary.json", tmp_path / "out.txt"
    path = script(LEAVES_ITS_RESULTS)
    flags = ["-v", "--layout", layout, "--summary", str(summary)]
    result = run(launcher_cmd(*flags, str(path), str(out), end), timeout=60)
    assert_clean(result, code)
    assert "END" in result.stdout, result
    assert "caused the cluster to lose" not in result.stderr, result
    assert "FREED with the client closed" in result.stdout, result
    assert out.read_text() == "written", result
    assert json.loads(summary.read_text())["status"] == ("ok" if code == 0 else "failed")


HARD_EXIT = """
import os, sys, threading, time, multiprocessing
from distributed import Client

def square(x):
    return x * x

with multiprocessing.Pool(2) as pool:  # forked children leave by the real os._exit
    print("POOL", sum(pool.map(square, range(10))))
print("RESULT", Client().submit(sum, [1, 2]).result())  # not flushed: still printed
if sys.argv[1] == "thread":
    threading.Thread(target=os._exit, args=(5,)).start()
    time.sleep(60)
else:
    try:
        os._exit(int(sys.argv[1]))
    finally:
        print("FINALLY")
"""


@pytest.mark.parametrize("how, code", [("0", 0), ("3", 3), ("thread", 5)])
def test_os_exit_in_the_script_ends_the_job_in_order_with_its_status(script, tmp_path, how, code):
    # dask-mpi scripts end with os._exit(0) to get past its hangs; it used to end the
    # client rank alone, and mpirun then failed the job (exit 9) with no summary.
    summary = tmp_path / "summary.json"
    path = script(HARD_EXIT)
    result = run(launcher_cmd("--summary", str(summary), str(path), how), timeout=60)
    assert_clean(result, code)
    assert "POOL 285" in result.stdout and "RESULT 3" in result.stdout, result
    assert "FINALLY" not in result.stdout, result
    assert not NOISE.search(result.output), result
    report = json.loads(summary.read_text())
    assert report["exit_code"] == code, report
    assert report["status"] == ("ok" if code == 0 else "failed"), report


def test_too_few_ranks_for_the_layout():
    result = run(launcher_cmd("--layout", "dedicated", n=2))
    assert_clean(result, 2)
    assert result.stderr.count("needs at least 3 MPI ranks") == 1
    assert result.seconds < 30


def test_wrong_mpi_hydra_world_the_library_cannot_join():
    # MPICH's own mpiexec, but the processes lose the PMI connection, as a library
    # that does not speak hydra's PMI would: every process sees a world of 1.
    cmd = [
        str(MPIRUN),
        "-n",
        "3",
        "env",
        "-u",
        "PMI_FD",
        "-u",
        "PMI_PORT",
        PYTHON,
        "-m",
        "launcher",
    ]
    result = run(cmd)
    assert_clean(result, 2)
    assert result.stderr.count("mpiexec started 3 processes") == 1, result
    assert "final result" not in result.stdout


def test_wrong_mpi_open_mpis_mpirun_with_mpich_mpi4py(open_mpi):
    env = {k: v for k, v in open_mpi.env.items() if k != "MPI4PY_LIBMPI"}  # mpi4py: MPICH
    result = run(open_mpi.cmd(3), env=env)
    assert result.returncode != 0 and not result.leftovers, result
    assert result.stderr.count("Open MPI's mpirun started this process") == 1, result
    assert "final result" not in result.stdout


@pytest.mark.parametrize("mode", ["turns", "together"])
def test_the_admin_guides_thread_race_check_runs(open_mpi, mode):
    """tools/mpi_thread_race.py, which the admin guide gives for checking a site's Open
    MPI across nodes, runs to the end in both modes (here on one node)."""
    tool = str(REPO / "tools" / "mpi_thread_race.py")
    result = run(open_mpi.python(3, tool, mode), env=open_mpi.env, timeout=60)
    assert result.returncode == 0 and not result.leftovers, result
    assert "TCP connect" not in result.output, result
    usage = run([PYTHON, tool], timeout=30)
    assert usage.returncode == 1 and "usage:" in usage.stderr, usage


ON_OTHER_MPI = (
    PRINT_MPI_LIBRARY
    + TASK_WORLD
    + PROGRAM_WORLD
    + """
import sys
from distributed import get_client
import dask.array as da
print("WORKERS", len(get_client().scheduler_info()["workers"]))
print("SUM", int(da.ones((1000, 1000), chunks=250).sum().compute()))
sys.exit(3)
"""
)


def test_other_mpis_run_the_cluster(other_mpi, script, tmp_path):
    """Saga and Betzy run Open MPI, and offer Intel MPI: under their mpirun, with mpi4py
    on their library, the cluster starts with nanny workers and TLS, and the script's
    exit status is the job's."""
    summary = tmp_path / "summary.json"
    path = str(script(ON_OTHER_MPI))
    result = run(other_mpi.cmd(4, "--summary", str(summary), path), env=other_mpi.env)
    assert_clean(result, 3)
    assert f"MPI {other_mpi.library}" in result.stdout, result
    assert "WORKERS 3" in result.stdout and "SUM 1000000" in result.stdout, result
    assert "TASK WORLD 1" in result.stdout, result  # Open MPI 5 waited in it forever
    assert "PROGRAM WORLD 1\nTASK PROGRAM WORLD 1\n" in result.stdout, result  # so here
    assert not NOISE.search(result.output), result
    data = json.loads(summary.read_text())
    assert (data["status"], data["exit_code"], data["workers"]) == ("failed", 3, 3), data
    assert data["protocol"] == "tls", data


def test_other_mpis_give_the_script_on_rank_1_its_input(other_mpi, script, tmp_path):
    """Open MPI gives ranks other than 0 /dev/null (the script read nothing), Intel
    MPI's hydra a pipe that never ends. One line: Open MPI 5's mpirun never ends rank
    0's input (openpmix #4024), so a script reading to the end waits there anyway."""
    (tmp_path / "input").write_text("a line for the script\n")
    path = str(script('print("GOT", input())'))
    with open(tmp_path / "input") as stdin:
        result = run(
            other_mpi.cmd(4, "--layout", "dedicated", path), env=other_mpi.env, stdin=stdin
        )
    assert_clean(result)
    assert "GOT a line for the script" in result.stdout, result


@pytest.mark.parametrize("flags, world", [((), 1), (("--no-nanny",), 3)])
def test_a_task_that_initialises_mpi(script, flags, world):
    """h5py and netCDF4 built for parallel HDF5 (Saga's modules) initialise MPI as they
    are imported. In a nanny's worker process that MPI_Init took the rank's place in the
    job: MPICH killed the process, each restart died the same way, and the task failed
    with KilledWorker. Now it gets a world of its own, as in a LocalCluster's worker;
    without a nanny the task runs in the rank, whose MPI is the job's. A program the
    script or a task starts is no rank either: it inherited the rank's place, and its
    MPI_Init failed ("PMI_Init failed"; Open MPI 5 waited in it forever)."""
    result = run(launcher_cmd(*flags, str(script(TASK_WORLD + PROGRAM_WORLD)), n=3), timeout=90)
    assert_clean(result)
    assert f"TASK WORLD {world}" in result.stdout, result
    assert "PROGRAM WORLD 1\nTASK PROGRAM WORLD 1\n" in result.stdout, result
    assert "restarted" not in result.stderr and not NOISE.search(result.output), result


def test_an_mpi_init_that_never_returns_ends_the_job_in_time():
    """launcher/initwatch.py. Rank 1 is a process that never joins MPI (mpiexec's MPMD
    form), so rank 0's MPI_Init waits for it: it must not wait for the walltime."""
    started = time.monotonic()
    result = run(
        [
            str(MPIRUN),
            "-n",
            "1",
            PYTHON,
            "-m",
            "launcher",
            "--startup-timeout",
            "3",
            ":",
            "-n",
            "1",
            "sleep",
            "120",
        ],
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    assert "launcher: rank 0: MPI_Init did not return within 3 s" in result.stderr, result


def test_no_worker_rank_waits_when_the_scheduler_cannot_start(script):
    # A dashboard address that is not this node's (TEST-NET-3) fails the scheduler on
    # rank 0 only.
    result = run(launcher_cmd("--dashboard-address", "203.0.113.5:8787"))
    assert result.returncode != 0 and not result.leftovers, result
    assert result.stderr.count("the scheduler did not start") == 1, result
    assert re.search(
        r"Cannot assign requested address \(interface \w+, dashboard address "
        r"203\.0\.113\.5:8787\); check --interface and --dashboard-address",
        result.stderr,
    ), result
    assert result.seconds < 30


RESTRICTED_TASKS = """
import os, signal
import dask
from distributed import Client
from launcher.scheduler import NoWorkerInThisJob

client = Client()
workers = client.scheduler_info()["workers"]

def outcome(**restrictions):
    try:
        return client.submit(lambda: "ran", pure=False, **restrictions).result(timeout=30)
    except NoWorkerInThisJob as err:
        return f"failed: {err}"

print("GPU1", outcome(resources={"GPU": 1}))
print("GPU2", outcome(resources={"GPU": 2}))
print("ADDRESS", outcome(workers=["tcp://127.0.0.1:9"]))
print("LOOSE", outcome(workers=["tcp://127.0.0.1:9"], allow_other_workers=True))
print("HOST", outcome(workers=["no-such-host"]))
print("ONE", outcome(workers=[next(iter(workers))]))
with dask.annotate(resources={"GPU": 1}):
    annotated = dask.delayed(lambda: "ran")()
try:
    print("ANNOTATED", annotated.compute())
except NoWorkerInThisJob:
    print("ANNOTATED failed")
for pid in client.run(os.getpid).values():  # restarted by their nannies
    os.kill(pid, signal.SIGKILL)
print("RESTARTED", outcome(resources={"GPU": 1}))
"""


@pytest.mark.parametrize("resources", [None, "{'GPU': 1}"])
def test_a_task_no_worker_of_the_job_can_run_fails_at_once(script, resources):
    """distributed keeps a task whose resources or workers no worker has waiting for
    such a worker to join (distributed #8256); in a job none joins, and the job waited
    for its walltime. It fails at once, saying what it asked for and what to do, once
    every worker is there: a task right after the worker processes were killed waits
    for their restart."""
    env = {"DASK_DISTRIBUTED__WORKER__RESOURCES": resources} if resources else {}
    result = run(launcher_cmd("--no-progress", str(script(RESTRICTED_TASKS)), n=3), env=env)
    assert_clean(result)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    gpu_advice = "export DASK_DISTRIBUTED__WORKER__RESOURCES=\"{'GPU': 2}\""
    assert "failed: task " in lines["GPU2"] and gpu_advice in lines["GPU2"], result
    assert "it may only run on tcp://127.0.0.1:9" in lines["ADDRESS"], result
    assert "it may only run on no-such-host" in lines["HOST"], result
    assert (lines["LOOSE"], lines["ONE"]) == ("ran", "ran"), result
    if resources:
        assert "the workers have {'GPU': 1}" in lines["GPU2"], result
        assert (lines["GPU1"], lines["ANNOTATED"], lines["RESTARTED"]) == ("ran",) * 3, result
    else:
        assert "it needs resources {'GPU': 1}, and the workers have none" in lines["GPU1"]
        assert lines["ANNOTATED"] == "failed", result
        assert lines["RESTARTED"].startswith("failed: "), result


RESTARTED_UNDER_THE_SCRIPT = """
import os, signal, time
from distributed import Client
print("SCRIPT TOP", flush=True)
client = Client()
def square(x):
    return x * x
for pid in client.run(os.getpid).values():
    os.kill(pid, signal.SIGKILL)
print("AFTER KILL", client.submit(square, 3).result(timeout=30))
client.restart()
print("AFTER RESTART", client.submit(square, 4).result(timeout=30))
"""


def test_in_one_process_a_restarted_worker_does_not_run_the_script(script):
    """Without mpirun the nanny lives in the script's process, and multiprocessing had
    the worker process it started again (after a kill, client.restart()) import the
    script as __mp_main__: the script ran there, its Client() failed the process, and
    the nanny restarted it until the job's timeout."""
    result = run(launcher_cmd("--no-progress", str(script(RESTARTED_UNDER_THE_SCRIPT)), n=None))
    assert_clean(result)
    assert result.stdout.count("SCRIPT TOP") == 1, result
    assert "AFTER KILL 9" in result.stdout and "AFTER RESTART 16" in result.stdout, result
    assert result.stderr.count("is restarted") == 1, result


SLURM_RUNNER = """
import os
# as srun sets them for the job's first task
os.environ.update(SLURM_PROCID="0", SLURM_NTASKS="3", SLURM_JOB_ID="77")
from dask.distributed import Client
from dask_jobqueue.slurm import SLURMRunner

options = {"scheduler_file": "scheduler-{job_id}.json", "worker_options": {"nthreads": 8}}
with SLURMRunner(**options) as runner:
    with Client(runner) as client:
        client.wait_for_workers(runner.n_workers)
        print("WORKERS", runner.n_workers, len(client.scheduler_info()["workers"]))
        print("RESULT", client.submit(sum, [40, 2]).result())
"""


def test_a_script_written_for_dask_jobqueues_slurm_runner_runs_on_the_jobs_cluster(
    script, tmp_path
):
    """SLURMRunner has every Slurm task run the script and gives task 0 the scheduler's
    role: here that started a second scheduler in the client rank, which waited for
    workers that never came (the job hung until its walltime). The runner is now the
    job's client, as dask-mpi's initialize() is."""
    result = run(launcher_cmd(str(script(SLURM_RUNNER)), n=3), timeout=60, cwd=tmp_path)
    assert_clean(result)
    assert not list(tmp_path.glob("scheduler-*.json")), result  # no scheduler of its own
    assert "WORKERS 2 2" in result.stdout and "RESULT 42" in result.stdout, result
    assert "SLURMRunner() in your script: the launcher's cluster is up already; ignored: " in (
        result.stderr
    ), result
    assert "'nthreads': 8" in result.stderr and "scheduler_file" not in result.stderr, result


ASYNCHRONOUS = """
import asyncio, os
os.environ.update(SLURM_PROCID="0", SLURM_NTASKS="3", SLURM_JOB_ID="78")
from distributed import Client
from dask_jobqueue.slurm import SLURMRunner

async def main():
    async with Client(asynchronous=True) as client:
        await client.wait_for_workers(2)
        print("ASYNC", await client.submit(sum, [1, 2]))
    async with SLURMRunner(asynchronous=True, scheduler_file="s-{job_id}.json") as runner:
        async with Client(runner, asynchronous=True) as client:
            await client.wait_for_workers(runner.n_workers)
            print("ASYNC RUNNER", await client.submit(sum, [3, 4]), runner.n_workers)

asyncio.run(main())
"""


def test_asynchronous_clients_and_runners_wait_for_workers(script, tmp_path):
    # The launcher's wait_for_workers (which refuses more workers than the job has)
    # returned None where an asynchronous client returns what its caller awaits.
    result = run(launcher_cmd(str(script(ASYNCHRONOUS)), n=3), timeout=60, cwd=tmp_path)
    assert_clean(result)
    assert "ASYNC 3" in result.stdout and "ASYNC RUNNER 7 2" in result.stdout, result
    assert not NOISE.search(result.output), result
