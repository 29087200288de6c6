"""The schedule of one benchmark run, and what it collects.

Within each repetition every figure's contenders run once, in an order rotated from
one repetition to the next; repetitions follow each other. So every contender sees the
same machine conditions over the run, and ratios within the run are fair even when
the machine's speed drifts (another job, thermal limits).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import measure
from benchmarks.contenders import STARTUP, THROUGHPUT, Contender, rotated
from benchmarks.slurm import NODE_CPUS, JobRun, SlurmBench, tail

#: Workers of the submit -> result figure: the tutorial's ``cluster.scale(5)``.
TUTORIAL_WORKERS = 5


@dataclass(frozen=True)
class Sizes:
    """How big and how often: the three modes differ only in these."""

    reps: int
    ranks: tuple[int, ...]  # figure 1's rank counts; the others run at ranks[0]
    tasks: int  # figure 4: tiny tasks
    array_side: int  # figure 4: the dask.array is side x side float64
    timeout: float  # per command
    in_job: bool = True  # figures 1 and 2 also under srun inside a Slurm job
    side_reps: int | None = None  # repetitions of figures 3 and 4 (None: all)
    wide_reps: int | None = None  # repetitions of the rank counts after the first (None: all)

    @classmethod
    def for_mode(cls, mode: str, reps: int | None) -> Sizes:
        base = {
            "full": cls(5, (4, 8, 16, 32), 20_000, 4000, 180),
            "quick": cls(2, (4, 8), 2000, 2000, 120, in_job=False, side_reps=1, wide_reps=1),
            "smoke": cls(1, (4,), 200, 400, 90, in_job=False),
        }[mode]
        return base if reps is None else dataclasses.replace(base, reps=reps)

    @property
    def env_sizes(self) -> dict[str, int]:
        return {"tasks": self.tasks, "array_side": self.array_side}


@dataclass
class Results:
    """Every sample by (metric, contender key, ranks); failures and counts beside them."""

    samples: dict[tuple[str, str, int], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )
    failures: dict[tuple[str, str, int], list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )
    counts: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # contender key -> reason
    labels: dict[str, str] = field(default_factory=dict)
    load: list[tuple[str, float]] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def add(self, metric: str, key: str, ranks: int, value: float | None) -> None:
        if value is not None:
            self.samples[(metric, key, ranks)].append(value)

    def fail(self, figure: str, key: str, ranks: int, reason: str) -> None:
        self.failures[(figure, key, ranks)].append(reason)

    def values(self, metric: str, key: str, ranks: int) -> measure.Stat:
        return measure.Stat(self.samples.get((metric, key, ranks), []))

    def note_load(self, when: str) -> None:
        self.load.append((when, os.getloadavg()[0]))

    def to_json(self, sizes: Sizes, mode: str, slurm_version: str | None) -> str:
        """Everything needed to render the report again (``--render-only``)."""
        return json.dumps(
            {
                "mode": mode,
                "sizes": dataclasses.asdict(sizes),
                "slurm_version": slurm_version,
                "samples": [[*k, v] for k, v in self.samples.items()],
                "failures": [[*k, v] for k, v in self.failures.items()],
                "counts": [[*k, v] for k, v in self.counts.items()],
                "skipped": self.skipped,
                "labels": self.labels,
                "load": self.load,
                "machine": self.machine,
                "versions": self.versions,
                "command": self.command,
                "started": self.started,
                "seconds": self.seconds,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> tuple[Results, Sizes, str, str | None]:
        data = json.loads(text)
        res = cls(
            counts={(k, n): v for k, n, v in data["counts"]},
            skipped=data["skipped"],
            labels=data["labels"],
            load=[tuple(x) for x in data["load"]],
            machine=data.get("machine", {}),
            versions=data.get("versions", {}),
            command=data.get("command", ""),
            started=data["started"],
            seconds=data["seconds"],
        )
        for metric, key, ranks, values in data["samples"]:
            res.samples[(metric, key, ranks)] = values
        for figure, key, ranks, reasons in data["failures"]:
            res.failures[(figure, key, ranks)] = reasons
        sizes = data["sizes"]
        sizes["ranks"] = tuple(sizes["ranks"])
        return res, Sizes(**sizes), data["mode"], data["slurm_version"]


class Suite:
    """Runs the figures; ``log`` receives one line per measurement."""

    def __init__(
        self,
        sizes: Sizes,
        workdir: Path,
        slurm: SlurmBench | None,
        slurm_reason: str | None,
        log: Callable[[str], None],
    ) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.slurm = slurm
        self.slurm_reason = slurm_reason
        self.log = log
        self.results = Results()

    # --- the run -------------------------------------------------------------------

    def run(self) -> Results:
        res = self.results
        for contender in (*STARTUP, *THROUGHPUT):
            res.labels[contender.key] = contender.label
        for key in ("launcher-srun", "slurmrunner-srun", "saga", "slurmcluster", "slurmrunner"):
            res.labels[key] = SLURM_LABELS[key]
            if self.slurm is None:
                res.skipped[key] = f"no Slurm: {self.slurm_reason}"
            elif key in IN_JOB and not self.sizes.in_job:
                res.skipped[key] = "not run in this mode (in-job rows)"
            elif key in NEED_JOBQUEUE:
                reason = _missing("dask_jobqueue")
                if reason:
                    res.skipped[key] = reason
        res.note_load("start")
        for rep in range(self.sizes.reps):
            self.log(f"repetition {rep + 1} of {self.sizes.reps}")
            for ranks in self.sizes.ranks:
                wide = ranks != self.sizes.ranks[0]
                if wide and self.sizes.wide_reps is not None and rep >= self.sizes.wide_reps:
                    continue
                for contender in rotated(STARTUP, rep):
                    self.startup(contender, ranks)
                self.in_job_steps(rep, ranks)
            if self.sizes.side_reps is None or rep < self.sizes.side_reps:
                for contender in rotated(THROUGHPUT, rep):
                    self.throughput(contender, self.sizes.ranks[0])
                self.submit_to_result(rep)
            res.note_load(f"after repetition {rep + 1}")
        res.seconds = time.time() - res.started
        return res

    # --- figures 1, 2 and 5 --------------------------------------------------------

    def startup(self, contender: Contender, ranks: int) -> None:
        """Tutorial end to end; start -> ready and end -> last process gone."""
        run = measure.run(
            contender.command(ranks, "tutorial", self.workdir),
            timeout=self.sizes.timeout,
            env=contender.env(ranks, self.sizes.env_sizes),
            cwd=self.workdir,
        )
        marks = run.markers()
        if contender.harness is not None and not _has(marks, "ready", "result", "end"):
            self._failed("startup", contender.key, ranks, run.problem(), run)
            return
        if not run.ok:
            self._failed("startup", contender.key, ranks, run.problem(), run)
            return
        res = self.results
        res.add("e2e", contender.key, ranks, run.wall)
        if contender.harness is not None:
            res.add("ready", contender.key, ranks, marks["ready"]["t"] - run.started)
            res.add("shutdown", contender.key, ranks, run.last_gone - marks["end"]["t"])
            self._count(contender.key, ranks, marks["result"], ranks if contender.mpi else None)
        self.log(
            f"  {contender.key:>14} n={ranks:<3} {run.wall:6.2f} s"
            + (f"  ready {marks['ready']['t'] - run.started:5.2f} s" if marks else "")
            + (f"  shutdown {run.last_gone - marks['end']['t']:5.2f} s" if marks else "")
        )

    def in_job_steps(self, rep: int, ranks: int) -> None:
        """The same tutorial under srun inside a job: launcher and SLURMRunner."""
        if self.slurm is None or ranks > NODE_CPUS:
            return
        steps = [
            (key, harness, workers)
            for key, harness, workers in (
                ("launcher-srun", "launcher", ranks - 1),
                ("slurmrunner-srun", "slurmrunner", ranks - 2),
            )
            if key not in self.results.skipped
        ]
        if not steps:
            return
        for key, harness, workers in steps[rep % len(steps) :] + steps[: rep % len(steps)]:
            job = self.slurm.step(harness, ranks, workers)
            marks = job.markers()
            if job.error or not _has(marks, "step-start", "ready", "result", "end", "step-end"):
                self._failed("startup", key, ranks, job.error or "markers missing", job.run)
                continue
            start, end = marks["step-start"]["t"], marks["step-end"]["t"]
            res = self.results
            res.add("e2e", key, ranks, end - start)
            res.add("ready", key, ranks, marks["ready"]["t"] - start)
            res.add("shutdown", key, ranks, end - marks["end"]["t"])
            self._count(key, ranks, marks["result"], ranks)
            self.log(f"  {key:>14} n={ranks:<3} {end - start:6.2f} s (in job, srun)")

    # --- figure 4 ------------------------------------------------------------------

    def throughput(self, contender: Contender, ranks: int) -> None:
        run = measure.run(
            contender.command(ranks, "throughput", self.workdir),
            timeout=self.sizes.timeout,
            env=contender.env(ranks, self.sizes.env_sizes),
            cwd=self.workdir,
        )
        marks = run.markers()
        if not run.ok or not _has(marks, "tiny", "array"):
            self._failed("throughput", contender.key, ranks, run.problem(), run)
            return
        tiny, array = marks["tiny"], marks["array"]
        res = self.results
        res.add("tiny_rate", contender.key, ranks, tiny["tasks"] / tiny["seconds"])
        res.add("array_seconds", contender.key, ranks, array["seconds"])
        res.add("array_rate", contender.key, ranks, array["tasks"] / array["seconds"])
        self._count(contender.key, ranks, array, ranks if contender.mpi else None)
        self.log(
            f"  {contender.key:>14} n={ranks:<3} {tiny['tasks'] / tiny['seconds']:7.0f} tasks/s"
            f"  array {array['seconds']:5.2f} s  ({array['protocol']})"
        )

    # --- figure 3 ------------------------------------------------------------------

    def submit_to_result(self, rep: int) -> None:
        if self.slurm is None:
            return
        slurm = self.slurm
        jobs: list[tuple[str, int, Callable[[], JobRun]]] = [
            ("saga", TUTORIAL_WORKERS + 1, lambda: slurm.launcher_saga(TUTORIAL_WORKERS)),
        ]
        if "slurmcluster" not in self.results.skipped:
            jobs.append(("slurmcluster", TUTORIAL_WORKERS + 1, slurm.slurmcluster))
        if "slurmrunner" not in self.results.skipped:
            ranks = TUTORIAL_WORKERS + 2
            jobs.append(
                ("slurmrunner", ranks, lambda: slurm.step("slurmrunner", ranks, TUTORIAL_WORKERS))
            )
        shift = rep % len(jobs)
        for key, ranks, submit in jobs[shift:] + jobs[:shift]:
            job = submit()
            if job.error or job.seconds is None or "final result is: 20" not in job.output:
                reason = job.error or f"no result in the output{tail(job.output)}"
                self._failed("submit", key, ranks, reason, job.run)
                continue
            self.results.add("submit", key, ranks, job.seconds)
            result_at = None
            if key == "slurmcluster":
                counted = _slurmcluster_count(job.output)
                if counted:
                    workers, worker_jobs, result_at = counted
                    self.results.counts[(key, ranks)] = {
                        "workers": workers,
                        "threads": workers,
                        "allocated": worker_jobs + 1,
                        "protocol": "tcp",
                    }
            else:
                marks = job.markers()
                if "result" in marks:
                    self._count(key, ranks, marks["result"], ranks)
                    result_at = marks["result"]["t"]
            # The result is stamped inside the job, the submission next to slurmctld:
            # one machine, one clock.
            to_result = None if result_at is None else result_at - job.submitted
            self.results.add("submit_result", key, ranks, to_result)
            shown = "?" if to_result is None else f"{to_result:6.2f} s"
            self.log(
                f"  {key:>14} n={ranks:<3} submit -> result {shown}, done {job.seconds:6.2f} s"
            )

    # --- bookkeeping ---------------------------------------------------------------

    def _count(self, key: str, ranks: int, mark: dict, allocated: int | None) -> None:
        """Workers and threads counted by the running cluster (kept from the first run;
        a later run that counted differently is recorded as a failure note)."""
        counted = {
            "workers": mark["workers"],
            "threads": mark["threads"],
            "allocated": allocated,
            "protocol": mark.get("protocol"),
        }
        first = self.results.counts.setdefault((key, ranks), counted)
        if first["workers"] != counted["workers"]:
            self.results.fail("workers", key, ranks, f"counted {counted['workers']} workers")

    def _failed(self, figure: str, key: str, ranks: int, reason: str, run: measure.Run) -> None:
        self.results.fail(figure, key, ranks, reason)
        self.log(f"  {key:>14} n={ranks:<3} FAILED: {reason}")
        if run.leftovers:
            self.log(f"    killed leftovers: {run.leftovers}")


#: Figures 1 and 2 under srun inside a job (the others are figure 3's jobs).
IN_JOB = ("launcher-srun", "slurmrunner-srun")
#: The Slurm contenders that are dask-jobqueue's.
NEED_JOBQUEUE = frozenset({"slurmrunner-srun", "slurmcluster", "slurmrunner"})

SLURM_LABELS = {
    "launcher-srun": "launcher under srun (in a job)",
    "slurmrunner-srun": "dask-jobqueue SLURMRunner under srun (in a job)",
    "saga": "launcher: sbatch jobscripts/saga.sh",
    "slurmcluster": "dask-jobqueue SLURMCluster (tutorial: 1 job + 1 job per worker)",
    "slurmrunner": "dask-jobqueue SLURMRunner: sbatch + srun",
}


def _has(marks: dict, *events: str) -> bool:
    return all(event in marks for event in events)


def _missing(module: str) -> str | None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"{module.replace('_', '-')} is not installed (pip install -e '.[bench]')"
    return None


def _slurmcluster_count(output: str) -> tuple[int, int, float] | None:
    """Workers joined, worker jobs submitted, and when the result came."""
    for line in output.splitlines():
        if line.startswith("BENCH_SLURMCLUSTER "):
            workers, jobs, at = line.split()[1:4]
            return int(workers), int(jobs), float(at)
    return None
