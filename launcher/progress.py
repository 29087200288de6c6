"""Progress lines in the job log while the user's code runs.

A batch job is read the next morning from a file, so by default this prints a plain,
complete line every ``progress-interval`` seconds (no terminal control characters);
only when stderr is a terminal does it redraw one live line instead.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from dask.utils import format_bytes, format_time
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin


class TaskCounter(SchedulerPlugin):
    """Counts finished and failed tasks on the scheduler (its state keeps no totals)."""

    name = "launcher-task-counter"

    def __init__(self) -> None:
        self.done = 0
        self.erred = 0

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start == "processing" and finish == "memory":
            self.done += 1
        elif finish == "erred" and start != "erred":
            self.erred += 1


def snapshot(dask_scheduler: Any) -> dict[str, int]:
    """Runs on the scheduler: the numbers of one progress line."""
    counter = dask_scheduler.plugins.get(TaskCounter.name)
    workers = dask_scheduler.workers.values()
    return {
        "done": counter.done if counter else 0,
        "erred": counter.erred if counter else 0,
        "in_flight": sum(len(ws.processing) for ws in workers),
        "waiting": sum(
            1
            for ts in dask_scheduler.tasks.values()
            if ts.state in ("waiting", "queued", "no-worker")
        ),
        "workers": len(dask_scheduler.workers),
        # distributed pauses a worker whose process memory is over its pause fraction;
        # it says so in a warning the job log leaves out without -v
        "paused": sum(ws.status.name == "paused" for ws in workers),
        "memory": sum(ws.memory.process for ws in workers),
        "memory_limit": sum(ws.memory_limit or 0 for ws in workers),
    }


def format_line(numbers: dict[str, int], elapsed: float, expected_workers: int) -> str:
    paused = f", {numbers['paused']} paused for memory" if numbers["paused"] else ""
    return (
        f"launcher: progress after {format_time(elapsed)}: {numbers['done']} tasks done, "
        f"{numbers['in_flight']} running, {numbers['waiting']} waiting, "
        f"{numbers['erred']} failed; workers {numbers['workers']}/{expected_workers}{paused}; "
        f"memory {format_bytes(numbers['memory'])} of {format_bytes(numbers['memory_limit'])}"
    )


class Progress:
    """A background thread that prints a progress line every ``interval`` seconds."""

    def __init__(
        self, client: Client, interval: float, expected_workers: int, stream: TextIO = sys.stderr
    ) -> None:
        self.client = client
        self.interval = interval
        self.expected_workers = expected_workers
        self.stream = stream
        self.live = stream.isatty()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="launcher-progress", daemon=True)

    def start(self) -> None:
        self.client.register_plugin(TaskCounter())
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        if self.live:
            self.stream.write("\n")
            self.stream.flush()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                numbers = self.client.run_on_scheduler(snapshot)
            except Exception:  # the cluster is going away; the job's end says why
                return
            line = format_line(numbers, time.monotonic() - self.started, self.expected_workers)
            self.stream.write(f"\r{line}\033[K" if self.live else f"{line}\n")
            self.stream.flush()
