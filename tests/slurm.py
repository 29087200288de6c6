"""A real Slurm for the tests: ``tools/minislurm`` driven from Python.

Every client command goes through ``minislurm exec`` (which works for the single-node
and the namespaced form alike) and has a timeout. Jobs are submitted with a test
token in their environment, so any process of a job that outlives it can be found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MINISLURM = str(REPO / "tools" / "minislurm")
UP_TIMEOUT = 600  # the first `up` on a fresh machine installs Debian's Slurm packages
CMD_TIMEOUT = 60


def netns_supported() -> bool:
    """Whether network namespaces can be made here (needed for the multi-node form)."""
    if not all(shutil.which(tool) for tool in ("ip", "nsenter", "unshare")):
        return False
    try:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10)
        made = subprocess.run(
            ["unshare", "--net", "--uts", "--mount", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and made.returncode == 0


def cannot_run_reason(netns: bool) -> str | None:
    """Why a real Slurm cannot run here, or None."""
    if os.geteuid() != 0:
        return "minislurm needs root (it starts slurmctld/slurmd and makes namespaces)"
    if netns and not netns_supported():
        return "no network namespaces here (ip netns / unshare --net)"
    return None


@dataclass
class Job:
    id: str
    output: Path
    workdir: Path

    @property
    def text(self) -> str:
        return self.output.read_text() if self.output.exists() else ""


class MiniSlurm:
    """One minislurm instance, identified by its state directory."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = str(state_dir)

    @classmethod
    def fresh(cls, *up_args: str) -> MiniSlurm:
        """A new instance in a short directory (Unix socket paths live below it)."""
        cluster = cls(tempfile.mkdtemp(prefix="mst-", dir="/tmp"))
        cluster.up(*up_args)
        return cluster

    def tool(
        self, command: str, *args: str, timeout: float = CMD_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [MINISLURM, command, "--state-dir", self.state_dir, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"minislurm {command} {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}\n{self.log_tails()}"
            )
        return done

    def up(self, *args: str) -> subprocess.CompletedProcess:
        done = self.tool("up", *args, timeout=UP_TIMEOUT)
        exports = done.stdout.splitlines()
        assert f"export SLURM_CONF={self.state_dir}/slurm.conf" in exports, done.stdout
        for line in exports:
            assert line.startswith(("export ", "#")), f"not eval-safe: {line!r}"
        return done

    def down(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.tool("down", *args, timeout=120, check=check)

    def discard(self) -> None:
        """Stop it and remove its directory (unless MINISLURM_KEEP is set)."""
        self.down(check=False)
        if not os.environ.get("MINISLURM_KEEP"):
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def recorded(self) -> dict:
        return json.loads(Path(self.state_dir, "state.json").read_text())

    def log_tails(self, n: int = 15) -> str:
        parts = []
        for path in sorted(Path(self.state_dir, "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"----- {path}\n" + "\n".join(lines))
        return "\n".join(parts)

    def run(
        self,
        *cmd: str,
        env: dict[str, str] | None = None,
        timeout: float = CMD_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        """A command with the cluster's SLURM_CONF, where slurmctld can be reached."""
        done = subprocess.run(
            [MINISLURM, "exec", "--state-dir", self.state_dir, "--", *cmd],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {done.returncode}\nstdout:\n{done.stdout}\n"
                f"stderr:\n{done.stderr}\n{self.log_tails()}"
            )
        return done

    def submit(self, *args: str, workdir: Path, env: dict[str, str] | None = None) -> Job:
        """``sbatch`` with the output in ``workdir``, which is also the job's directory."""
        output = workdir / "slurm-%j.out"
        done = self.run(
            "sbatch", "--parsable", f"--chdir={workdir}", f"--output={output}", *args, env=env
        )
        job = done.stdout.strip().split(";")[0]
        return Job(job, Path(str(output).replace("%j", job)), workdir)

    def state(self, job: Job) -> str:
        """The job's state in the queue ("" once it has left it)."""
        return self.run("squeue", "-h", "-j", job.id, "-o", "%T", check=False).stdout.strip()

    def wait(self, job: Job, timeout: float = 90, pending: float = 20) -> None:
        """Until the job has left the queue (polling: faster than ``sbatch --wait``).

        This Slurm is idle, so a job still pending after ``pending`` seconds asks for
        more than it has; that fails at once instead of after ``timeout``.
        """
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            state = self.state(job)
            if not state:
                return
            if state == "PENDING" and time.monotonic() - start > pending:
                reason = self.run("squeue", "-h", "-j", job.id, "-o", "%r", check=False)
                self.run("scancel", job.id, check=False)
                raise AssertionError(f"job {job.id} pending for {pending} s: {reason.stdout}")
            time.sleep(0.2)
        self.run("scancel", job.id, check=False)
        raise AssertionError(
            f"job {job.id} still queued after {timeout} s\n{job.text}\n{self.log_tails()}"
        )

    def wait_for_output(self, job: Job, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, job.text, re.M)
            if match:
                return match
            time.sleep(0.2)
        self.run("scancel", job.id, check=False)
        raise AssertionError(f"job {job.id}: no {pattern!r} after {timeout} s\n{job.text}")

    def accounting(self, job: Job) -> tuple[str, str]:
        """(State, ExitCode) from the job completion log (``sacct -c``), e.g. ("FAILED", "3:0")."""
        deadline = time.monotonic() + 10
        while True:  # the record is written as the job completes
            text = self.run(
                "sacct", "-c", "-n", "-P", "-j", job.id, "-o", "jobid,state,exitcode"
            ).stdout
            rows = [r.split("|") for r in text.split() if r.split("|")[0] == job.id]
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert rows, f"sacct -c has no record of job {job.id}: {text!r}"
        return rows[-1][1], rows[-1][2]

    def scontrol_exit_code(self, job: Job) -> str:
        text = self.run("scontrol", "show", "job", job.id).stdout
        match = re.search(r"\bExitCode=(\d+:\d+)", text)
        assert match, text
        return match.group(1)
