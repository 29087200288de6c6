"""What users see of a batch job: the dashboard (and how to reach it), progress lines in
the job log, the performance report, and the demo's task graph."""

import json
import os
import pty
import re
import shutil
import socket
import subprocess
import urllib.request

import pytest

from tests.conftest import launcher_cmd, run, start
from tests.test_mpirun import assert_clean
from tests.test_slurm_jobs import Submitter

WAIT_FOR_RELEASE = """
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
"""


def open_dashboard(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, response.read().decode()


def test_the_dashboard_answers_while_the_job_runs(script, tmp_path):
    release = tmp_path / "release"
    job = start(launcher_cmd(str(script(WAIT_FOR_RELEASE)), str(release)))
    try:
        line = job.wait_for_line("launcher: dashboard at ", stream="stderr")
        status, page = open_dashboard(line.split()[-1])
    finally:
        release.touch()
    assert_clean(job.finish(timeout=60))
    assert status == 200 and "Dask" in page


LOADED_ON_FIRST_VISIT = """
import sys, urllib.request
from distributed import get_client
port = get_client().scheduler_info()["services"]["dashboard"]
print("before", "bokeh" in sys.modules)
with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as page:
    print("page", page.status, page.url.endswith("/status"), "Dask" in page.read().decode())
print("after", "bokeh" in sys.modules)
"""


def test_the_dashboard_is_loaded_on_the_first_visit(script):
    """A job nobody looks at never imports bokeh (launcher/dashboard.py); the first
    visitor gets the page all the same. Rank 0 runs the scheduler and this script."""
    result = run(launcher_cmd(str(script(LOADED_ON_FIRST_VISIT))))
    assert_clean(result)
    assert result.stdout.split("\n")[:3] == ["before False", "page 200 True True", "after True"]


def test_no_dashboard_means_none(tmp_path):
    """Not even the dashboard's port: a taken one goes unmentioned."""
    summary = tmp_path / "summary.json"
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            launcher_cmd(
                "--no-dashboard", "--dashboard-address", f":{port}", "--summary", str(summary)
            )
        )
    assert_clean(result)
    assert "dashboard" not in result.stderr
    assert json.loads(summary.read_text())["dashboard_url"] is None


@pytest.mark.parametrize(
    ("env", "login"),
    [
        ({"SLURM_SUBMIT_HOST": "login-3"}, "login-3"),
        (
            {"SLURM_SUBMIT_HOST": "login-3", "DASK_LAUNCHER__LOGIN_HOST": "saga.sigma2.no"},
            "saga.sigma2.no",
        ),
    ],
)
def test_inside_slurm_the_ssh_tunnel_command_is_printed(env, login):
    env = {"SLURM_JOB_ID": "77", "USER": "ola", **env}
    result = run(launcher_cmd(), env=env)
    assert_clean(result)
    url = re.search(r"launcher: dashboard at http://([\w.-]+):(\d+)/status", result.stderr)
    assert url, result
    host, port = url.groups()
    assert (
        f"ssh -N -L {port}:{host}:{port} ola@{login}  then browse http://localhost:{port}/status"
    ) in result.stderr


SLOW = """
import time
from distributed import get_client
client = get_client()
futures = client.map(lambda i: (time.sleep(0.4), i)[1], range(30), pure=False)
print("SUM", sum(client.gather(futures)))
"""


def test_progress_lines_are_plain_text_in_a_log(script):
    result = run(launcher_cmd("--progress-interval", "1", str(script(SLOW))))
    assert_clean(result)
    lines = re.findall(r"^launcher: progress after .*$", result.stderr, re.M)
    assert len(lines) >= 2, result
    assert re.search(
        r"\d+ tasks done, \d+ running, \d+ waiting, 0 failed; workers 3/3; "
        r"memory [\d.]+ \w+ of [\d.]+ \w+",
        lines[-1],
    ), lines
    assert "\r" not in result.stderr and "\x1b" not in result.stderr


PAUSED = """
import builtins, time
from distributed import get_client
client = get_client()

def leak(mb):
    import numpy as np
    builtins.__dict__.setdefault("leaks", []).append(np.ones(mb * 2**20 // 8))

def status():
    return [w["status"] for w in client.scheduler_info()["workers"].values()]

for step in range(20):  # 30 MiB at a time into the pause band (80-95% of the limit)
    client.run(leak, 30)
    time.sleep(0.5)
    if status() == ["paused"]:
        break
print("STATUS", status(), flush=True)
time.sleep(2.5)
client.run(lambda: builtins.leaks.clear())
"""


def test_progress_lines_count_workers_paused_for_memory(script):
    """distributed pauses a worker over 80% of its memory limit, and says so only in a
    warning the job log leaves out: the progress line showed tasks waiting and nothing
    running, and not why."""
    path = script(PAUSED)
    result = run(
        launcher_cmd("--progress-interval", "1", "--memory-limit", "500MiB", str(path), n=2)
    )
    assert_clean(result)
    assert "STATUS ['paused']" in result.stdout, result
    assert re.search(r"workers 1/1, 1 paused for memory; memory", result.stderr), result


LEFT_WAITING = """
import time
from distributed import Event, Semaphore, get_client, progress

def wait_for_an_event():
    Event("never").wait()

def wait_for_a_lease():
    with Semaphore(max_leases=1, name="taken"):
        time.sleep(60)

futures = get_client().map(lambda i: (time.sleep(0.2), i)[1], range(3))
progress(futures)
print("SUM", sum(get_client().gather(futures)))
waiting = [get_client().submit(f) for f in (wait_for_an_event, wait_for_a_lease, wait_for_a_lease)]
time.sleep(1)
"""


def test_requests_left_waiting_at_the_end_leave_no_traceback(script):
    """distributed.progress() in a script, and tasks still waiting in Event.wait() and
    Semaphore.acquire() when it ends: closing the scheduler cancelled their handlers
    (the progress bar's feed notices the closed bar only 100 ms later), and distributed
    logged each as an ERROR with a traceback after the result."""
    result = run(launcher_cmd("--no-progress", str(script(LEFT_WAITING))))
    assert_clean(result)
    assert "100% Completed" in result.stdout and "SUM 3" in result.stdout, result
    assert "Traceback" not in result.output and "ERROR" not in result.output, result


def test_no_progress_flag(script):
    result = run(launcher_cmd("--progress-interval", "1", "--no-progress", str(script(SLOW))))
    assert_clean(result)
    assert "progress" not in result.stderr


def test_a_terminal_gets_a_live_line(script):
    """With stderr a terminal (one process, no mpirun), the line is redrawn in place."""
    primary, secondary = pty.openpty()
    env = {
        **os.environ,
        "DASK_LAUNCHER__INTERFACE": "lo",
        "DASK_LAUNCHER__DASHBOARD_ADDRESS": "127.0.0.1:0",
    }
    with subprocess.Popen(
        launcher_cmd("--progress-interval", "1", str(script(SLOW)), n=None),
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
        start_new_session=True,
    ) as proc:
        os.close(secondary)
        seen = b""
        try:
            while True:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        os.close(primary)
    assert proc.returncode == 0, seen
    assert b"\rlauncher: progress after" in seen and b"\x1b[K" in seen


FAILING_AFTER_WORK = """
import dask
@dask.delayed
def crunch_numbers(x):
    return x * 2
print(sum(dask.compute(*[crunch_numbers(i) for i in range(20)])))
raise RuntimeError("analysis failed after the work")
"""


@pytest.mark.parametrize("fails", [False, True])
def test_performance_report_covers_the_run(script, tmp_path, fails):
    source = FAILING_AFTER_WORK if fails else FAILING_AFTER_WORK.rsplit("raise", 1)[0]
    report = tmp_path / "report.html"
    result = run(launcher_cmd("--report", str(report), str(script(source))))
    assert_clean(result, 1 if fails else 0)
    page = report.read_text()
    assert page.lstrip().lower().startswith("<!doctype html") or "<html" in page[:500]
    assert "crunch_numbers" in page


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot program is not installed")
@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_the_demo_draws_its_task_graph(tmp_path, suffix):
    graph = tmp_path / f"graph.{suffix}"
    result = run(launcher_cmd("--graph", str(graph)))
    assert_clean(result)
    assert "and the final result is: 20" in result.stdout
    data = graph.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in data
    assert f"task graph written to {graph}" in result.stdout


def test_without_graphviz_the_demo_says_what_to_install(tmp_path):
    fake = tmp_path / "no-graphviz" / "graphviz"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named graphviz')\n")
    result = run(
        launcher_cmd("--graph", str(tmp_path / "g.svg")), env={"PYTHONPATH": str(fake.parent)}
    )
    assert_clean(result)
    assert "and the final result is: 20" in result.stdout
    assert result.stderr.count("cannot draw the task graph") == 1
    assert "pip install graphviz" in result.stderr and not (tmp_path / "g.svg").exists()


def test_graph_is_for_the_demo_only(script):
    result = run(launcher_cmd("--graph", "g.svg", str(script("pass\n"))))
    assert_clean(result, 2)
    assert result.stderr.count("--graph draws the demo's task graph") == 1


def test_progress_and_tunnel_in_a_real_batch_log(slurm_one, tmp_path):
    one = Submitter(slurm_one, tmp_path)
    path = one.script("slow.py", SLOW)
    job = one.submit("--ntasks=4", args=["--progress-interval", "1", path])
    assert one.finish(job) == ("COMPLETED", "0:0"), job.text
    assert len(re.findall(r"^launcher: progress after ", job.text, re.M)) >= 2, job.text
    assert "\r" not in job.text and "\x1b" not in job.text
    assert re.search(
        r"launcher: to open it from your laptop: ssh -N -L (\d+):n1:\1 \w+@\S+", job.text
    ), job.text


LOGS_IN_MEMORY = """
import logging
from distributed import get_client

def warn_in_a_task():
    logging.getLogger("distributed.worker").warning("WARNED IN A TASK")

client = get_client()
client.submit(warn_in_a_task).result()
logs = [message for worker in client.get_worker_logs().values() for _, message in worker]
print("IN THE WORKERS' LOGS", any("WARNED IN A TASK" in message for message in logs))
print("WORKER INFO", any(" - INFO - " in message for message in logs))
print("SCHEDULER INFO", any(" - INFO - " in m for _, m in client.get_scheduler_logs()))
"""


@pytest.mark.parametrize("flags", [[], ["--no-nanny"], ["-v"]])
def test_dasks_logs_are_kept_for_get_worker_logs_and_quiet_in_the_job_log(script, flags):
    """distributed's KilledWorker message sends users to the workers' logs: with
    distributed's logger at ERROR for a quiet job log they held errors only."""
    result = run(launcher_cmd(*flags, str(script(LOGS_IN_MEMORY)), n=3), timeout=60)
    assert_clean(result)
    for line in ("IN THE WORKERS' LOGS", "WORKER INFO", "SCHEDULER INFO"):
        assert f"{line} True" in result.stdout, result
    verbose = "-v" in flags
    assert ("WARNED IN A TASK" in result.stderr) is verbose, result
    assert (" - INFO - " in result.stderr) is verbose, result
