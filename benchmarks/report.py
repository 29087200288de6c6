"""The report: machine, versions, one table per figure, targets with pass/miss, a plot.

Every ratio is of medians measured in the same run. Spread is min-max over the
repetitions. A figure that could not be measured says why in its cell, so a table
always has a row for every contender.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks import facts
from benchmarks.contenders import LEANEST_FLAGS, STARTUP, THROUGHPUT, Contender
from benchmarks.measure import Stat
from benchmarks.suite import IN_JOB, SLURM_LABELS, TUTORIAL_WORKERS, Results, Sizes

REPO = Path(__file__).resolve().parent.parent
FINDINGS = Path(__file__).with_name("findings.md")
SRUN_ROWS = IN_JOB
SUBMIT_ROWS = ("saga", "slurmcluster", "slurmrunner")


# --- formatting -------------------------------------------------------------------


def seconds(stat: Stat) -> str:
    if len(stat.values) == 1:
        return f"{stat.median:.2f} s"
    return f"{stat.median:.2f} s ({stat.low:.2f}-{stat.high:.2f})"


def rate(stat: Stat) -> str:
    if len(stat.values) == 1:
        return f"{stat.median:,.0f}/s"
    return f"{stat.median:,.0f}/s ({stat.low:,.0f}-{stat.high:,.0f})"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


class Cells:
    """One cell per (contender, ranks): the value, or why there is none."""

    def __init__(self, res: Results) -> None:
        self.res = res

    def cell(self, metric: str, figure: str, key: str, ranks: int, fmt=seconds) -> str:
        stat = self.res.values(metric, key, ranks)
        failed = self.res.failures.get((figure, key, ranks), [])
        if stat:
            note = f" ⚠ {len(failed)} failed" if failed else ""
            return fmt(stat) + note
        if key in self.res.skipped:
            return f"skipped: {self.res.skipped[key]}"
        if failed:
            return f"failed: {failed[0]}"
        return "—"


# --- targets ----------------------------------------------------------------------


@dataclass
class Target:
    name: str
    measured: str
    verdict: str  # pass | miss | n/a


def _ratio(res: Results, metric: str, a: str, b: str, ranks: int) -> float | None:
    x, y = res.values(metric, a, ranks), res.values(metric, b, ranks)
    return x.median / y.median if x and y else None


def _bound(name: str, value: float | None, limit: float, below: bool, unit: str = "x") -> Target:
    if value is None:
        return Target(name, "not measured", "n/a")
    ok = value <= limit if below else value >= limit
    shown = f"{value:.2f}x" if unit == "x" else f"{value:.2f} {unit}"
    return Target(name, shown, "pass" if ok else "miss")


def targets(res: Results, sizes: Sizes) -> list[Target]:
    out: list[Target] = []
    for ranks in (4, 32):
        if ranks not in sizes.ranks:
            out.append(Target(f"end to end at {ranks} ranks", "not measured in this mode", "n/a"))
            continue
        for key, name in (("launcher", "default"), ("leanest", "leanest")):
            limit = 1.1 if key == "launcher" else 1.0
            out.append(
                _bound(
                    f"end to end, {ranks} ranks: {name} ≤ {limit}x raw dask-mpi",
                    _ratio(res, "e2e", key, "initialize", ranks),
                    limit,
                    below=True,
                )
            )
            out.append(
                _bound(
                    f"end to end, {ranks} ranks: {name} ≤ 1.15x the floor",
                    _ratio(res, "e2e", key, "floor", ranks),
                    1.15,
                    below=True,
                )
            )
    for ranks in dict.fromkeys((sizes.ranks[0], sizes.ranks[-1])):
        for key, name in (("launcher", "default"), ("leanest", "leanest")):
            stat = res.values("shutdown", key, ranks)
            out.append(
                _bound(
                    f"shutdown, {ranks} ranks, {name}: ≤ 0.15 s",
                    stat.median if stat else None,
                    0.15,
                    below=True,
                    unit="s",
                )
            )
    out += _throughput_targets(res, sizes.ranks[0])
    out.append(
        _bound(
            "submit → result on minislurm: launcher ≤ 0.3x SLURMCluster",
            _ratio(res, "submit_result", "saga", "slurmcluster", TUTORIAL_WORKERS + 1),
            0.3,
            below=True,
        )
    )
    counted = {n: res.counts.get(("launcher", n), {}).get("workers") for n in sizes.ranks}
    shown = ", ".join(f"{n} ranks: {w if w is not None else '?'}" for n, w in counted.items())
    ok = all(w == n - 1 for n, w in counted.items())
    out.append(Target("workers N-1 by default (counted)", shown, "pass" if ok else "miss"))
    return out


def _throughput_targets(res: Results, ranks: int) -> list[Target]:
    """Tiny-task targets, pairing each LocalCluster row with the launcher row that
    really ran that protocol (as the running cluster reported it), whatever its flags."""
    out = []
    for protocol, local, limit, name in (
        ("tcp", "local-plain", 0.9, "no TLS"),
        ("tls", "local-tls", 0.8, "TLS"),
    ):
        title = (
            f"tiny-task throughput, {name}: launcher ≥ {limit}x LocalCluster ({ranks - 1} workers)"
        )
        ran = [
            key
            for key in ("launcher-plain", "launcher-tls")
            if res.counts.get((key, ranks), {}).get("protocol") == protocol
        ]
        if not ran:
            other = "LAUNCHER_TLS_FLAGS" if protocol == "tls" else "LAUNCHER_PLAIN_FLAGS"
            out.append(Target(title, f"no launcher run used {protocol}: check {other}", "n/a"))
            continue
        target = _bound(title, _ratio(res, "tiny_rate", ran[0], local, ranks), limit, below=False)
        target.measured += f" ({res.labels.get(ran[0], ran[0])} row)"
        out.append(target)
    return out


# --- the document -----------------------------------------------------------------


def _by_ranks(
    cells: Cells, metric: str, figure: str, keys: list[str], ranks: tuple[int, ...]
) -> str:
    rows = []
    for key in keys:
        row = [cells.res.labels.get(key, key)]
        for n in ranks:
            if key in SRUN_ROWS and n > 8:
                row.append("— (node has 8 CPUs)")
            else:
                row.append(cells.cell(metric, figure, key, n))
        rows.append(row)
    return table(["contender", *(f"{n} ranks" for n in ranks)], rows)


def render(
    res: Results,
    sizes: Sizes,
    mode: str,
    command: str,
    slurm_version: str | None,
    plot_name: str | None,
    rerendered: bool = False,
) -> str:
    cells = Cells(res)
    started = datetime.datetime.fromtimestamp(res.started).astimezone()
    startup_keys = [c.key for c in STARTUP] + list(SRUN_ROWS)
    cluster_keys = [c.key for c in STARTUP if c.harness is not None] + list(SRUN_ROWS)
    loads = ", ".join(f"{when} {value:.2f}" for when, value in res.load)
    parts = [
        "# Benchmarks: the launcher against the alternatives",
        "",
        f"Generated by `{command}`"
        + (" (this text re-rendered later with `--render-only`)" if rerendered else "")
        + f" ({mode} mode: {sizes.reps} repetition(s)"
        + (f"; figures 3 and 4: {sizes.side_reps}" if sizes.side_reps else "")
        + (f"; above {sizes.ranks[0]} ranks: {sizes.wide_reps}" if sizes.wide_reps else "")
        + f", contenders interleaved within each) on {started:%Y-%m-%d %H:%M %Z}; the run took "
        f"{res.seconds / 60:.1f} min. Values are the median over the repetitions with the "
        "spread (min-max) in parentheses; every ratio is of medians from this same run.",
        "",
        "To run it (from the repository root; the Slurm rows need root, for tools/minislurm):",
        "",
        "```bash",
        ".venv/bin/pip install -e '.[local,test,bench]'",
        ".venv/bin/python -m benchmarks            # full: 5 repetitions, 4-32 ranks",
        ".venv/bin/python -m benchmarks --quick    # fewer repetitions, 4 and 8 ranks, < 3 min",
        "```",
        "",
        "## Machine and versions",
        "",
        table(
            ["", ""],
            [[k, v] for k, v in (res.machine or facts.machine()).items()]
            + [["load average (1 min)", loads]]
            + [[k, v] for k, v in (res.versions or facts.versions(slurm_version)).items()],
        ),
        "",
        "## Targets",
        "",
        table(
            ["target", "measured", "result"],
            [[t.name, t.measured, f"**{t.verdict}**"] for t in targets(res, sizes)],
        ),
        "",
        "## 1. End to end: the tutorial workload",
        "",
        "Wall time from just before `mpirun -n N` (or `python` for LocalCluster, or `srun` "
        "inside a job) to the last process gone, for the tutorial's workload "
        "(`increment_data` over [1, 2, 3, 4, 5] with `dask.delayed`, `do_analysis = sum`: "
        "the launcher's built-in demo). More ranks than the 2 cores are oversubscribed. "
        f"LocalCluster at N gets N-1 worker processes of 1 thread, like the launcher. "
        f"Leanest launcher: `{' '.join(LEANEST_FLAGS)}`.",
        "",
        _by_ranks(cells, "e2e", "startup", startup_keys, sizes.ranks),
        "",
        "## 2. Start-up and shutdown",
        "",
        "Start → cluster ready: from just before `mpirun`/`python`/`srun` to the moment "
        "user code starts with every worker registered (the script calls "
        "`client.wait_for_workers` first, which returns at once under the launcher).",
        "",
        _by_ranks(cells, "ready", "startup", cluster_keys, sizes.ranks),
        "",
        "User code end → last process gone: from the script's last `time.time()` to the "
        "exit of `mpirun`/`python`/`srun` (and of every process it started).",
        "",
        _by_ranks(cells, "shutdown", "startup", cluster_keys, sizes.ranks),
        "",
    ]
    if plot_name:
        parts += [f"![start-up time against rank count]({plot_name})", ""]
    parts += [
        "## 3. Submit → result on minislurm",
        "",
        "From `sbatch` to the result printed by the job (stamped by the job's script "
        "next to its `print`), and to the job leaving the queue (polled every 50 ms next "
        "to slurmctld); one idle node claiming 8 CPUs, in a network namespace with `ib0`. "
        f"Each runs the tutorial on {TUTORIAL_WORKERS} workers of 1 CPU: the launcher "
        f"through `jobscripts/saga.sh` with {TUTORIAL_WORKERS + 1} tasks; SLURMCluster "
        "through the tutorial's own script in a 1-task job that submits one job per worker "
        "(and computes as soon as any worker has joined); SLURMRunner with "
        f"{TUTORIAL_WORKERS + 2} tasks. A busy queue would add a wait per job.",
        "",
        table(
            ["contender", "allocated", "submit → result", "submit → job done"],
            [
                [
                    res.labels.get(key, SLURM_LABELS[key]),
                    {"saga": "1 job, 6 tasks", "slurmcluster": "1 + 5 jobs of 1 task"}.get(
                        key, "1 job, 7 tasks"
                    ),
                    cells.cell("submit_result", "submit", key, n),
                    cells.cell("submit", "submit", key, n),
                ]
                for key, n in zip(
                    SUBMIT_ROWS,
                    (TUTORIAL_WORKERS + 1, TUTORIAL_WORKERS + 1, TUTORIAL_WORKERS + 2),
                    strict=True,
                )
            ],
        ),
        "",
        f"## 4. Throughput ({sizes.ranks[0] - 1} workers of 1 thread)",
        "",
        f"{sizes.tasks:,} tiny tasks (`client.map` of an identity function, then `gather`), "
        f"and `(x + x.T).sum()` of a {sizes.array_side}x{sizes.array_side} float64 "
        "dask.array in 256 chunks (moves chunks between workers). The launcher runs "
        f"`mpirun -n {sizes.ranks[0]}`; LocalCluster has the same {sizes.ranks[0] - 1} "
        "worker processes and threads. TLS for LocalCluster: `Security.temporary()`. "
        "The protocol column is what the running cluster reported.",
        "",
        table(
            ["contender", "protocol", "tiny tasks", "array reduction", "array tasks"],
            [_throughput_row(cells, c, sizes.ranks[0]) for c in THROUGHPUT],
        ),
        "",
        "## 5. Workers per allocated rank",
        "",
        "Counted by the running cluster (`scheduler_info`) when the result came, against "
        "the MPI ranks, Slurm tasks or jobs allocated. LocalCluster allocates no ranks: its "
        "N is the launcher job it is compared with.",
        "",
        _workers_table(res, sizes),
        "",
    ]
    problems = _problems(res)
    if problems:
        parts += ["## Failed and skipped measurements", "", *problems, ""]
    if FINDINGS.exists():
        parts += [FINDINGS.read_text().strip(), ""]
    return "\n".join(parts)


def _throughput_row(cells: Cells, contender: Contender, ranks: int) -> list[str]:
    res, key, label = cells.res, contender.key, contender.label
    if key in res.skipped:
        return [label, "—", f"skipped: {res.skipped[key]}", "—", "—"]
    protocol = str(res.counts.get((key, ranks), {}).get("protocol", "—"))
    expected = "tls" if contender.tls else "tcp"
    if protocol not in ("—", expected):
        protocol += f" (not {expected}: the launcher's default changed; see contenders.py)"
    return [
        label,
        protocol,
        cells.cell("tiny_rate", "throughput", key, ranks, rate),
        cells.cell("array_seconds", "throughput", key, ranks),
        cells.cell("array_rate", "throughput", key, ranks, rate),
    ]


def _workers_table(res: Results, sizes: Sizes) -> str:
    rows = []
    keys = [c.key for c in STARTUP if c.key != "floor"] + list(SRUN_ROWS) + list(SUBMIT_ROWS)
    for key in keys:
        for (k, ranks), count in sorted(res.counts.items()):
            if k != key:
                continue
            allocated = count.get("allocated")
            per_rank = f"{count['workers'] / allocated:.2f}" if allocated else "—"
            rows.append(
                [
                    res.labels.get(key, key),
                    str(allocated) if allocated else f"(N = {ranks})",
                    str(count["workers"]),
                    str(count["threads"]),
                    per_rank,
                    _formula(key, ranks, count["workers"], allocated),
                ]
            )
    return table(["contender", "allocated", "workers", "threads", "workers per rank", "as N"], rows)


def _formula(key: str, ranks: int, workers: int, allocated: int | None) -> str:
    n = allocated or ranks
    if key == "slurmcluster":
        return f"{workers} of {n - 1} worker jobs joined"
    diff = n - workers
    return "N" if diff == 0 else f"N-{diff}"


def _problems(res: Results) -> list[str]:
    lines = []
    for key, reason in res.skipped.items():
        lines.append(f"- {res.labels.get(key, key)}: skipped, {reason}")
    for (figure, key, ranks), reasons in sorted(res.failures.items()):
        first = reasons[0].replace("|", "/")
        lines.append(
            f"- {res.labels.get(key, key)}, {figure}, {ranks} ranks: {len(reasons)} failed: {first}"
        )
    return lines


# --- the plot ---------------------------------------------------------------------


def plot(res: Results, sizes: Sizes, path: Path) -> str | None:
    """Start -> ready against rank count; None (and why) if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no plot"
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    keys = [c.key for c in STARTUP] + list(SRUN_ROWS)
    for key in keys:
        metric = "e2e" if key == "floor" else "ready"
        points = [(n, res.values(metric, key, n)) for n in sizes.ranks]
        points = [(n, s) for n, s in points if s]
        if not points:
            continue
        xs = [n for n, _ in points]
        medians = [s.median for _, s in points]
        errors = [
            [s.median - s.low for _, s in points],
            [s.high - s.median for _, s in points],
        ]
        label = res.labels.get(key, key)
        if key == "floor":
            label = "floor (whole run: Python + MPI + import distributed)"
        ax.errorbar(
            xs,
            medians,
            yerr=errors,
            marker="o",
            capsize=3,
            label=label,
            linestyle="--" if key in ("floor", *SRUN_ROWS) else "-",
        )
    ax.set_ylim(bottom=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(sizes.ranks))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("ranks (MPI ranks or Slurm tasks; LocalCluster: N-1 workers)")
    ax.set_ylabel("start → all workers ready (s)")
    ax.set_title(f"Start-up on {os.cpu_count()} cores (median, min-max)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None
