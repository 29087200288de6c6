"""Tests of tools/minislurm: real slurmctld/slurmd (Debian's Slurm 22.05), no mocks.

Each test brings up its own cluster in its own short state dir under /tmp and always
runs ``minislurm down`` in teardown.
"""

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.slurm import CMD_TIMEOUT, MINISLURM, MiniSlurm, cannot_run_reason


def proc_stat(pid):
    """(command, state, parent pid, start time) from /proc/<pid>/stat, else None."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return data[data.index("(") + 1 : data.rindex(")")], rest[0], int(rest[1]), int(rest[19])


def proc_start(pid):
    """Start time of a live (non-zombie) pid, else None."""
    stat = proc_stat(pid)
    return None if stat is None or stat[1] in ("Z", "X") else stat[3]


def assert_gone(records):
    left = [r for r in records if proc_start(r["pid"]) == r["start"]]
    assert not left, f"still running after down: {left}"


@pytest.fixture
def cluster():
    reason = cannot_run_reason(netns=False)
    if reason:
        pytest.skip(reason)
    instance = MiniSlurm(tempfile.mkdtemp(prefix="mst-", dir="/tmp"))
    try:
        yield instance
    finally:
        instance.discard()


def test_single_node_job_runs_and_down_stops_everything(cluster, tmp_path):
    cluster.up()
    info = cluster.run("sinfo", "-h", "-N", "-o", "%N %t %c").stdout.split()
    assert len(info) == 3 and info[1:] == ["idle", "8"], info

    # single-node form: clients also work from the root namespace with SLURM_CONF alone
    direct = subprocess.run(
        ["sinfo", "-h", "-o", "%t"],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
        env=dict(os.environ, SLURM_CONF=f"{cluster.state_dir}/slurm.conf"),
    )
    assert direct.stdout.split() == ["idle"], direct

    # a second `up` with the same shape reuses the running cluster
    again = cluster.up()
    assert "already up" in again.stdout + again.stderr

    job = cluster.submit("--ntasks=4", "--wrap", "srun hostname", workdir=tmp_path)
    cluster.wait(job)
    lines = job.text.splitlines()
    assert len(lines) == 4 and len(set(lines)) == 1, lines
    assert cluster.accounting(job) == ("COMPLETED", "0:0")
    assert cluster.scontrol_exit_code(job) == "0:0"

    daemons = cluster.recorded()["daemons"]
    assert {d["name"] for d in daemons} >= {"slurmctld"} and len(daemons) == 2
    cluster.down()
    assert_gone(daemons)
    assert not Path(cluster.state_dir, "state.json").exists()
    assert Path(cluster.state_dir, "log", "slurmctld.log").exists(), "down keeps the logs"
    assert cluster.tool("status", check=False).returncode == 1


def children(pid):
    """(pid, state, command) of each process whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        stat = proc_stat(entry.name) if entry.name.isdigit() else None
        if stat is not None and stat[2] == pid:
            found.append((int(entry.name), stat[1], stat[0]))
    return found


def test_slurmstepd_is_reaped_by_the_nodes_reaper_not_init(cluster, tmp_path):
    """slurmd double-forks each slurmstepd; as on a real node, where init reaps at once,
    the exited step must not wait for this machine's PID 1 (which reaps every few
    seconds) while the job's end waits for it."""
    cluster.up()
    (node,) = [d for d in cluster.recorded()["daemons"] if d["name"] != "slurmctld"]
    reaper = node["pid"]
    (slurmd,) = [pid for pid, _, command in children(reaper) if command == "slurmd"]

    # the task's parent is its slurmstepd; that one's parent is the reaper
    script = "srun sh -c 'cut -d\" \" -f4 /proc/$PPID/stat'"
    job = cluster.submit("--ntasks=1", "--wrap", script, workdir=tmp_path)
    cluster.wait(job)
    assert job.text.split() == [str(reaper)], job.text
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        zombies = [c for c in children(reaper) if c[1] == "Z"]
        if not zombies:
            break
        time.sleep(0.05)
    assert not zombies, f"exited children left unreaped: {zombies}"

    cluster.down()
    assert proc_start(slurmd) is None, "slurmd outlived its reaper"


def test_job_exit_code_is_propagated(cluster, tmp_path):
    cluster.up()
    job = cluster.submit("--wrap", "exit 3", workdir=tmp_path)
    cluster.wait(job)
    assert cluster.accounting(job) == ("FAILED", "3:0")
    assert cluster.scontrol_exit_code(job) == "3:0"
    # exec passes exit status and stdout through
    done = cluster.run("sh", "-c", "echo $SLURM_CONF; exit 7", check=False)
    assert done.returncode == 7 and done.stdout.strip() == f"{cluster.state_dir}/slurm.conf"


def test_three_nodes_in_namespaces(cluster, tmp_path):
    reason = cannot_run_reason(netns=True)
    if reason:
        pytest.skip(reason)
    cluster.up("--nodes", "3")
    state = cluster.recorded()
    namespaces = state["netns"]
    assert len(namespaces) == 4, namespaces
    info = sorted(cluster.run("sinfo", "-h", "-N", "-o", "%N %t").stdout.splitlines())
    assert info == ["n1 idle", "n2 idle", "n3 idle"], info

    job = cluster.submit(
        "--nodes=3",
        "--ntasks-per-node=1",
        "--wrap",
        "srun hostname; srun ip -o -4 addr show ib0",
        workdir=tmp_path,
    )
    cluster.wait(job)
    lines = job.text.splitlines()
    hosts = [ln for ln in lines if "inet" not in ln]
    addrs = re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", job.text)
    assert len(hosts) == 3 and len(set(hosts)) == 3, job.text
    assert len(addrs) == 3 and len(set(addrs)) == 3, job.text
    assert all(" ib0 " in ln for ln in lines if "inet" in ln), job.text
    assert cluster.accounting(job)[1] == "0:0"

    cluster.down()
    assert_gone(state["daemons"])
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=CMD_TIMEOUT
    ).stdout
    assert not [ns for ns in namespaces if re.search(rf"^{re.escape(ns)}\b", listed, re.M)]


def test_down_when_nothing_is_up(cluster):
    done = cluster.down()
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    elsewhere = MiniSlurm(f"{cluster.state_dir}/does-not-exist").down()
    assert elsewhere.returncode == 0 and elsewhere.stdout == "" and elsewhere.stderr == ""
    done = subprocess.run(
        [MINISLURM, "exec", "--state-dir", cluster.state_dir, "--", "true"],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
    )
    assert done.returncode == 125 and "not up" in done.stderr


def test_binding_cores_the_machine_lacks_is_refused(cluster):
    cpus = len(os.sched_getaffinity(0))
    done = cluster.tool("up", "--bind-cores", "--cpus", str(cpus + 1), check=False)
    assert done.returncode == 1 and done.stdout == "", done
    assert (
        f"--bind-cores binds tasks to real CPUs: --cpus {cpus + 1} is more than the {cpus} "
        "this machine has"
    ) in done.stderr
    assert not os.path.exists(f"{cluster.state_dir}/state.json")


def test_down_after_controller_died_kills_leftover_steps(cluster, tmp_path):
    """down works on a broken cluster: slurmctld gone, a step still running."""
    cluster.up()
    job = cluster.submit("--ntasks=2", "--wrap", "srun sleep 300", workdir=tmp_path)
    deadline = time.monotonic() + 30
    while cluster.state(job) != "RUNNING":
        assert time.monotonic() < deadline, cluster.log_tails()
        time.sleep(0.2)
    ctl = next(d for d in cluster.recorded()["daemons"] if d["name"] == "slurmctld")
    steps = []
    while len(steps) < 2 and time.monotonic() < deadline:  # batch step + step 0
        steps = [
            p
            for p in os.listdir("/proc")
            if p.isdigit() and _cmd(p).startswith("slurmstepd:") and f"[{job.id}." in _cmd(p)
        ]
        time.sleep(0.2)
    assert len(steps) >= 2, steps
    step_records = [{"pid": int(p), "start": proc_start(p)} for p in steps]
    assert proc_start(ctl["pid"]) == ctl["start"]
    os.kill(ctl["pid"], signal.SIGKILL)  # the test started it (through minislurm up)
    daemons = cluster.recorded()["daemons"]
    done = cluster.down()
    assert "leftover" in done.stderr, done.stderr
    assert_gone(daemons + step_records)


def _cmd(pid):
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""
