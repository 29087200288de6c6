"""Smoke test of the benchmark suite (``python -m benchmarks --smoke``).

One repetition at the smallest sizes, in a subprocess writing to a temporary report:
every contender has its row with numbers (or says why it was skipped), the machine and
versions are there, and no process outlives the run. Timing targets are not asserted:
this machine's speed is not what the test is about.

The Slurm contenders use the shared one-node minislurm (``slurm_one``); where Slurm
cannot run they are skipped by the suite itself, with the reason in their rows.
"""

import importlib.util
import re

import pytest

from benchmarks.contenders import STARTUP, THROUGHPUT
from benchmarks.suite import IN_JOB, NEED_JOBQUEUE, SLURM_LABELS
from tests.conftest import PYTHON, REPO, run

NUMBER = re.compile(r"\d[\d,]*(\.\d+)? s\b|\d[\d,]*/s\b")


def slurm_args(request) -> tuple[list[str], str | None]:
    """``--slurm-state-dir`` of the shared minislurm, or ``--no-slurm`` and why."""
    try:
        cluster = request.getfixturevalue("slurm_one")
    except pytest.skip.Exception as skipped:
        return ["--no-slurm"], str(skipped)
    return ["--slurm-state-dir", cluster.state_dir], None


def row(report: str, label: str, after: str) -> str:
    """The first table row for ``label`` below the heading ``after``."""
    section = report[report.index(after) :]
    for line in section.splitlines():
        if line.startswith(f"| {label} |"):
            return line
    raise AssertionError(f"no row for {label!r} under {after!r}\n{report}")


def test_smoke_run_reports_every_contender(tmp_path, request):
    args, no_slurm = slurm_args(request)
    out = tmp_path / "benchmarks.md"
    result = run(
        [PYTHON, "-m", "benchmarks", "--smoke", "--out", str(out), *args],
        cwd=REPO,
        timeout=240,
    )
    assert result.returncode == 0, result
    assert not result.leftovers, f"processes outlived the benchmarks: {result.leftovers}"
    report = out.read_text()

    for heading in ("## Machine and versions", "## Targets", "## 1. End to end"):
        assert heading in report, report
    for fact in ("CPU", "cores", "RAM", "Python", "distributed", "dask-mpi", "MPI library"):
        assert re.search(rf"^\| {re.escape(fact)} \| \S", report, re.M), fact
    assert re.search(r"on \d{4}-\d\d-\d\d \d\d:\d\d", report), "no date"

    for contender in STARTUP:
        assert NUMBER.search(row(report, contender.label, "## 1. End to end"))
        if contender.harness is not None:  # the floor runs no user code
            line = row(report, contender.label, "## 2. Start-up and shutdown")
            assert NUMBER.search(line), line
    for contender in THROUGHPUT:
        line = row(report, contender.label, "## 4. Throughput")
        assert NUMBER.search(line), line

    jobqueue = importlib.util.find_spec("dask_jobqueue") is not None
    for key, label in SLURM_LABELS.items():
        line = row(report, label, "## 1. End to end" if "srun" in key else "## 3. Submit")
        if no_slurm:
            assert "skipped: no Slurm" in line, line
        elif key in IN_JOB:  # srun inside a job: the full and quick runs only
            assert "skipped: not run in this mode" in line, line
        elif key in NEED_JOBQUEUE and not jobqueue:
            assert "skipped: dask-jobqueue is not installed" in line, line
        elif "srun" in key:
            assert NUMBER.search(line), line
        else:  # submit -> result, and submit -> job done
            cells = [cell.strip() for cell in line.strip("| ").split(" | ")]
            assert all(NUMBER.fullmatch(cell) for cell in cells[-2:]), line

    for contender in (c for c in STARTUP if c.key != "floor"):
        assert row(report, contender.label, "## 5. Workers per allocated rank")

    if importlib.util.find_spec("matplotlib"):
        png = tmp_path / "benchmarks-startup.png"
        assert png.read_bytes().startswith(b"\x89PNG"), "no plot"
        assert "(benchmarks-startup.png)" in report
