"""Tests of tools/minislurm: real slurmctld/slurmd (Debian's Slurm 22.05), no mocks.

Each test brings up its own cluster in its own short state dir under /tmp (Unix socket
paths of slurmstepd/PMIx live under it and are limited to 108 bytes, so pytest's long
tmp_path is not used) and always runs `minislurm down` in teardown.  The first `up` on a
fresh machine installs the Debian packages (apt-get), hence the generous up timeout.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MINISLURM = str(ROOT / "tools" / "minislurm")
UP_TIMEOUT = 600  # includes a first-time apt-get install
CMD_TIMEOUT = 60

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="minislurm must run as root (starts slurmctld/slurmd, creates namespaces)",
)


def ms(*args, state_dir, timeout=CMD_TIMEOUT, check=True):
    p = subprocess.run(
        [MINISLURM, *args[:1], "--state-dir", state_dir, *args[1:]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"minislurm {' '.join(args)} exited {p.returncode}\n"
            f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}\n{log_tails(state_dir)}"
        )
    return p


def sx(state_dir, *cmd, timeout=CMD_TIMEOUT, check=True):
    """Run a Slurm client through `minislurm exec` (works in both forms)."""
    p = subprocess.run(
        [MINISLURM, "exec", "--state-dir", state_dir, "--", *cmd],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout}\n"
            f"stderr:\n{p.stderr}\n{log_tails(state_dir)}"
        )
    return p


def log_tails(state_dir, n=15):
    out = []
    for p in sorted(pathlib.Path(state_dir, "log").glob("*")):
        lines = p.read_text(errors="replace").splitlines()[-n:]
        out.append(f"----- {p}\n" + "\n".join(lines))
    return "\n".join(out)


def proc_start(pid):
    """Start time of a live (non-zombie) pid, else None."""
    try:
        data = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return None if rest[0] in ("Z", "X") else int(rest[19])


def recorded(state_dir):
    return json.loads(pathlib.Path(state_dir, "state.json").read_text())


def assert_gone(records):
    left = [r for r in records if proc_start(r["pid"]) == r["start"]]
    assert not left, f"still running after down: {left}"


def up(state_dir, *extra):
    p = ms("up", *extra, state_dir=state_dir, timeout=UP_TIMEOUT)
    assert f"export SLURM_CONF={state_dir}/slurm.conf" in p.stdout.splitlines(), p.stdout
    for line in p.stdout.splitlines():
        assert line.startswith(("export ", "#")), f"not eval-safe: {line!r}"
    return p


def submit(state_dir, *args):
    p = sx(state_dir, "sbatch", "--parsable", "--account=nn9999k", *args)
    return p.stdout.strip().split(";")[0]


def wait_job(state_dir, job, timeout=60):
    """Poll squeue until the job has left the queue (faster than sbatch --wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        q = sx(state_dir, "squeue", "-h", "-j", job, "-o", "%t", check=False)
        if q.returncode == 0 and not q.stdout.strip():
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job} not finished after {timeout} s\n{log_tails(state_dir)}")


def exit_codes(state_dir, job):
    """(sacct -c ExitCode, scontrol ExitCode) of a finished job, e.g. ('0:0', '0:0')."""
    deadline = time.monotonic() + 10
    while True:  # the jobcomp record is written as the job completes
        s = sx(state_dir, "sacct", "-c", "-n", "-P", "-j", job, "-o", "jobid,state,exitcode").stdout
        rows = [r.split("|") for r in s.split() if r.split("|")[0] == job]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows, f"sacct -c has no record of job {job}: {s!r}"
    sc = sx(state_dir, "scontrol", "show", "job", job).stdout
    m = re.search(r"\bExitCode=(\d+:\d+)", sc)
    assert m, sc
    return rows[-1][2], m.group(1)


@pytest.fixture
def state_dir():
    d = tempfile.mkdtemp(prefix="mst-", dir="/tmp")
    try:
        yield d
    finally:
        subprocess.run(
            [MINISLURM, "down", "--state-dir", d],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
        if not os.environ.get("MINISLURM_KEEP"):
            shutil.rmtree(d, ignore_errors=True)


def netns_supported():
    if not shutil.which("ip") or not shutil.which("nsenter") or not shutil.which("unshare"):
        return False
    try:
        a = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
        b = subprocess.run(
            ["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return a.returncode == 0 and b.returncode == 0


def test_single_node_job_runs_and_down_stops_everything(state_dir):
    up(state_dir)
    info = sx(state_dir, "sinfo", "-h", "-N", "-o", "%N %t %c").stdout.split()
    assert len(info) == 3 and info[1:] == ["idle", "8"], info

    # single-node form: clients also work from the root namespace with SLURM_CONF alone
    direct = subprocess.run(
        ["sinfo", "-h", "-o", "%t"],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
        env=dict(os.environ, SLURM_CONF=f"{state_dir}/slurm.conf"),
    )
    assert direct.stdout.split() == ["idle"], direct

    # a second `up` with the same shape reuses the running cluster
    again = up(state_dir)
    assert "already up" in again.stdout + again.stderr

    out = f"{state_dir}/out-%j.txt"
    job = submit(state_dir, "--ntasks=4", "-o", out, "--wrap", "srun hostname")
    wait_job(state_dir, job)
    lines = pathlib.Path(out.replace("%j", job)).read_text().splitlines()
    assert len(lines) == 4 and len(set(lines)) == 1, lines
    assert exit_codes(state_dir, job) == ("0:0", "0:0")

    daemons = recorded(state_dir)["daemons"]
    assert {d["name"] for d in daemons} >= {"slurmctld"} and len(daemons) == 2
    ms("down", state_dir=state_dir)
    assert_gone(daemons)
    assert not pathlib.Path(state_dir, "state.json").exists()
    assert pathlib.Path(state_dir, "log", "slurmctld.log").exists(), "down keeps the logs"
    assert ms("status", state_dir=state_dir, check=False).returncode == 1


def test_job_exit_code_is_propagated(state_dir):
    up(state_dir)
    job = submit(state_dir, "-o", "/dev/null", "--wrap", "exit 3")
    wait_job(state_dir, job)
    assert exit_codes(state_dir, job) == ("3:0", "3:0")
    # exec passes exit status and stdout through
    p = subprocess.run(
        [MINISLURM, "exec", "--state-dir", state_dir, "--", "sh", "-c", "echo $SLURM_CONF; exit 7"],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
    )
    assert p.returncode == 7 and p.stdout.strip() == f"{state_dir}/slurm.conf", p


@pytest.mark.skipif(
    not netns_supported(), reason="no network namespace support (ip netns / unshare --net)"
)
def test_three_nodes_in_namespaces(state_dir):
    up(state_dir, "--nodes", "3")
    st = recorded(state_dir)
    namespaces = st["netns"]
    assert len(namespaces) == 4, namespaces
    info = sorted(sx(state_dir, "sinfo", "-h", "-N", "-o", "%N %t").stdout.splitlines())
    assert info == ["n1 idle", "n2 idle", "n3 idle"], info

    out = f"{state_dir}/out-%j.txt"
    job = submit(
        state_dir,
        "--nodes=3",
        "--ntasks-per-node=1",
        "-o",
        out,
        "--wrap",
        "srun hostname; srun ip -o -4 addr show ib0",
    )
    wait_job(state_dir, job)
    text = pathlib.Path(out.replace("%j", job)).read_text()
    lines = text.splitlines()
    hosts = [ln for ln in lines if "inet" not in ln]
    addrs = re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", text)
    assert len(hosts) == 3 and len(set(hosts)) == 3, text
    assert len(addrs) == 3 and len(set(addrs)) == 3, text
    assert all(" ib0 " in ln for ln in lines if "inet" in ln), text
    assert exit_codes(state_dir, job)[0] == "0:0"

    daemons = st["daemons"]
    ms("down", state_dir=state_dir)
    assert_gone(daemons)
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=CMD_TIMEOUT
    ).stdout
    assert not [ns for ns in namespaces if re.search(rf"^{re.escape(ns)}\b", listed, re.M)], listed


def test_down_when_nothing_is_up(state_dir):
    p = ms("down", state_dir=state_dir)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == ""
    p = ms("down", state_dir=f"{state_dir}/does-not-exist")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == ""
    p = subprocess.run(
        [MINISLURM, "exec", "--state-dir", state_dir, "--", "true"],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
    )
    assert p.returncode == 125 and "not up" in p.stderr


def test_down_after_controller_died_kills_leftover_steps(state_dir):
    """down works on a broken cluster: slurmctld gone, a step still running."""
    up(state_dir)
    job = submit(state_dir, "--ntasks=2", "-o", "/dev/null", "--wrap", "srun sleep 300")
    deadline = time.monotonic() + 30
    while "R" not in sx(state_dir, "squeue", "-h", "-j", job, "-o", "%t").stdout:
        assert time.monotonic() < deadline, log_tails(state_dir)
        time.sleep(0.2)
    ctl = next(d for d in recorded(state_dir)["daemons"] if d["name"] == "slurmctld")
    steps = []
    while len(steps) < 2 and time.monotonic() < deadline:  # batch step + step 0
        steps = [
            p
            for p in os.listdir("/proc")
            if p.isdigit()
            and pathlib.Path(f"/proc/{p}/cmdline").exists()
            and _cmd(p).startswith("slurmstepd:")
            and f"[{job}." in _cmd(p)
        ]
        time.sleep(0.2)
    assert len(steps) >= 2, steps
    step_recs = [{"pid": int(p), "start": proc_start(p)} for p in steps]
    assert proc_start(ctl["pid"]) == ctl["start"]
    os.kill(ctl["pid"], signal.SIGKILL)  # the test started it (through minislurm up)
    daemons = recorded(state_dir)["daemons"]
    p = ms("down", state_dir=state_dir)
    assert "leftover" in p.stderr, p.stderr
    assert_gone(daemons + step_recs)


def _cmd(pid):
    try:
        return (
            pathlib.Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode(errors="replace")
        )
    except OSError:
        return ""
