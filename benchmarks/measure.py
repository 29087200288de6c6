"""Run one command and time it, leaving nothing behind.

Every command runs in its own session (``start_new_session=True``) with a unique token
in its environment. Processes inherit the token, including MPI ranks that hydra starts
and Slurm job steps that inherit the submitting environment, so after the command
returns every process still carrying the token is one of ours that outlived it. Those
are waited for briefly (their exit counts as "last process gone"), then killed by PID.
Nothing is ever killed by name.

Output goes to files, not pipes: no reader threads compete for the two cores, and a
chatty command can never block on a full pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variable that marks every process a benchmark command starts.
TOKEN_VAR = "BENCHMARKS_TOKEN"
#: Lines starting with this are measurements printed by the workload scripts.
MARKER = "BENCH "


@dataclass
class Run:
    """One finished command: its wall-clock timestamps, output and markers."""

    cmd: list[str]
    returncode: int
    started: float  # time.time() just before the process was created
    exited: float  # time.time() when the command's own process exited
    last_gone: float  # time.time() when no process with its token was left
    stdout: str
    stderr: str
    timed_out: bool = False
    leftovers: list[str] = field(default_factory=list)

    @property
    def wall(self) -> float:
        """Start to last process gone: what the user waits for."""
        return self.last_gone - self.started

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.leftovers

    def markers(self) -> dict[str, dict[str, Any]]:
        """The ``BENCH {...}`` lines by event name (the first of each name wins)."""
        return parse_markers(self.stdout)

    def problem(self) -> str:
        """A one-line reason this run cannot be used, for the report."""
        if self.timed_out:
            return f"timed out after {self.exited - self.started:.0f} s"
        if self.leftovers:
            return f"{len(self.leftovers)} process(es) outlived the command"
        tail = (self.stderr.strip().splitlines() or ["no output"])[-1]
        return f"exit {self.returncode}: {tail[:160]}"


def parse_markers(text: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith(MARKER):
            with contextlib.suppress(ValueError):
                data = json.loads(line[len(MARKER) :])
                found.setdefault(data["event"], data)
    return found


def processes_with(variable: str, value: str) -> dict[int, str]:
    """PID -> command line of every process whose environment has ``variable=value``
    (the test suite finds its leftovers the same way)."""
    needle = f"{variable}={value}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                found[int(entry.name)] = cmdline.decode(errors="replace").strip()
        except OSError:
            continue
    return found


def reap(token: str, grace: float) -> tuple[float | None, list[str]]:
    """Wait up to ``grace`` s for the token's processes to go, then kill the rest by PID.

    Returns when the last one went (None if none was left at the first look) and the
    ones that had to be killed.
    """
    deadline = time.monotonic() + grace
    left = processes_with(TOKEN_VAR, token)
    if not left:
        return None, []
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = processes_with(TOKEN_VAR, token)
    gone = time.time()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return gone, [f"{pid}: {cmd}" for pid, cmd in left.items()]


def new_token() -> str:
    return uuid.uuid4().hex


def run(
    cmd: Sequence[str | os.PathLike],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    token: str | None = None,
    grace: float = 5.0,
) -> Run:
    """Run ``cmd`` to its end (killing its whole session at ``timeout``)."""
    token = token or new_token()
    full_env = {**os.environ, **(env or {}), TOKEN_VAR: token}
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.time()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = False
        try:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
        finally:
            exited = time.time()
            if proc.poll() is None:  # timed out, or interrupted (Ctrl-C) while waiting
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            last_gone, leftovers = reap(token, 0 if timed_out else grace)
        out.seek(0)
        err.seek(0)
        return Run(
            cmd=argv,
            returncode=proc.returncode,
            started=started,
            exited=exited,
            last_gone=exited if last_gone is None else max(exited, last_gone),
            stdout=out.read(),
            stderr=err.read(),
            timed_out=timed_out,
            leftovers=leftovers,
        )


@dataclass
class Stat:
    """Median and spread of one figure over the repetitions of a run."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def __bool__(self) -> bool:
        return bool(self.values)
