"""What happened in a run: a JSON file for scripts (``--summary``) and a line for humans.

Written by the client rank at the end of every run that got as far as planning, also
when the user code failed or the job was interrupted, so the morning-after question
"what did my job do?" always has an answer.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from dask.utils import format_bytes

from launcher.plan import Plan


@dataclass
class Summary:
    status: str = "failed"  # ok | failed | interrupted
    exit_code: int = 1
    mpi_size: int = 1
    layout: str = ""
    workers: int = 0
    threads_per_worker: int | None = None
    memory_limit_bytes: int | None = None
    protocol: str = ""
    scheduler_address: str | None = None
    dashboard_url: str | None = None
    startup_seconds: float | None = None
    run_seconds: float | None = None
    shutdown_seconds: float | None = None
    target: dict[str, Any] = field(default_factory=dict)
    worker_hosts: list[str] = field(default_factory=list)
    #: What the planner noticed that cost the job (workers with fewer cores than threads).
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def from_plan(cls, plan: Plan) -> Summary:
        """What is known before the run: the shape of the cluster."""
        workers = plan.workers
        return cls(
            mpi_size=plan.mpi_size,
            layout=plan.layout,
            protocol=plan.protocol,
            workers=len(workers),
            threads_per_worker=workers[0].nthreads if workers else None,
            memory_limit_bytes=min(w.memory_limit or 0 for w in workers) if workers else None,
            target=plan.target.to_dict(),
            worker_hosts=[w.host for w in workers],
            notes=list(plan.notes),
        )

    def write(self, path: str) -> None:
        """Write atomically, so a reader never sees half a file; its directory is made if
        need be, as distributed makes the performance report's (``--summary
        results/run.json`` before the script made results/ lost the summary)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)

    def line(self) -> str:
        def sec(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f} s"

        sizing = ""
        if self.threads_per_worker is not None:
            memory = format_bytes(self.memory_limit_bytes) if self.memory_limit_bytes else "?"
            sizing = f", {self.threads_per_worker} thread(s) and {memory} each"
        return (
            f"launcher: {self.status}, exit {self.exit_code}; {self.workers} worker(s)"
            f"{sizing} on {len(set(self.worker_hosts)) or 1} node(s); startup "
            f"{sec(self.startup_seconds)}, run {sec(self.run_seconds)}, shutdown "
            f"{sec(self.shutdown_seconds)}"
        )

    def report(self, path: str | None) -> None:
        if path:
            try:
                self.write(path)
            except OSError as err:
                print(f"launcher: cannot write summary to {path}: {err}", file=sys.stderr)
        print(self.line(), file=sys.stderr, flush=True)
