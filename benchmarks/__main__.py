"""``python -m benchmarks [--quick | --smoke] [--reps N] [--out docs/benchmarks.md]``.

Run from the repository root with the project's environment, e.g.
``.venv/bin/python -m benchmarks --quick``. Slurm contenders run on a minislurm the
suite brings up (and down) itself, or on one given with ``--slurm-state-dir``; where
Slurm cannot run (not root, no namespaces) their rows say so.
"""

from __future__ import annotations

import argparse
import compileall
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import facts, report, slurm
from benchmarks.suite import Results, Sizes, Suite
from benchmarks.workloads import write_scripts

REPO = Path(__file__).resolve().parent.parent


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="2 repetitions at 4 ranks, 1 at 8 ranks and of throughput and Slurm jobs (< 3 min)",
    )
    mode.add_argument(
        "--smoke", action="store_true", help="1 repetition, smallest sizes (for the test suite)"
    )
    parser.add_argument("--reps", type=int, help="repetitions (default: 5 full, 2 quick, 1 smoke)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="the report"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--slurm-state-dir", help="use this running minislurm (one node, --netns, 8 CPUs)"
    )
    where.add_argument("--no-slurm", action="store_true", help="skip the Slurm contenders")
    parser.add_argument("--keep-workdir", action="store_true", help="keep scripts and job outputs")
    parser.add_argument("--raw", type=Path, help="also save the raw results (JSON) here")
    parser.add_argument(
        "--render-only",
        type=Path,
        metavar="RAW",
        help="measure nothing: write the report from results saved with --raw",
    )
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


@contextmanager
def minislurm(args: argparse.Namespace) -> Iterator[tuple[str | None, str | None]]:
    """(state dir, None) of a usable minislurm, or (None, why there is none)."""
    if args.slurm_state_dir:
        yield args.slurm_state_dir, None
        return
    if args.no_slurm:
        yield None, "--no-slurm given"
        return
    reason = slurm.cannot_run_reason()
    if reason:
        yield None, reason
        return
    sys.path.insert(0, str(REPO))
    from tests.slurm import MiniSlurm  # the tests' own driver of tools/minislurm

    log("bringing up a minislurm (one node in a network namespace, 8 CPUs)")
    try:
        cluster = MiniSlurm.fresh("--netns", "--cpus", str(slurm.NODE_CPUS))
    except (AssertionError, OSError) as err:
        yield None, f"minislurm did not come up: {str(err).splitlines()[0]}"
        return
    try:
        yield cluster.state_dir, None
    finally:
        log("bringing the minislurm down")
        cluster.discard()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        results, sizes, mode, slurm_version = Results.from_json(args.render_only.read_text())
        command = results.command or "python -m benchmarks"
    else:
        mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        sizes = Sizes.for_mode(mode, args.reps)
        command = shlex.join(["python", "-m", "benchmarks", *argv])
        results, slurm_version = measure_all(args, sizes, mode)
        results.command = command
        if args.raw:
            args.raw.write_text(results.to_json(sizes, mode, slurm_version))
    plot_path = out.with_name(f"{out.stem}-startup.png")
    no_plot = report.plot(results, sizes, plot_path)
    if no_plot:
        log(no_plot)
    text = report.render(
        results,
        sizes,
        mode,
        command,
        slurm_version,
        None if no_plot else plot_path.name,
        rerendered=bool(args.render_only),
    )
    out.write_text(text)
    log(f"wrote {out}" + ("" if no_plot else f" and {plot_path}"))
    return 0


def compile_launcher() -> None:
    """Give the launcher's modules bytecode, as every other contender's have.

    pip compiles an installed package's modules; an editable install leaves ours to
    Python, which does not write bytecode under PYTHONDONTWRITEBYTECODE=1 (set on the
    test machine): every rank would then compile them from source in every run.
    """
    import launcher

    compileall.compile_dir(Path(launcher.__file__).parent, quiet=1)


def measure_all(args: argparse.Namespace, sizes: Sizes, mode: str) -> tuple[Results, str | None]:
    """Run the suite in a scratch directory (removed afterwards unless kept)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))  # short: Slurm sockets
    write_scripts(workdir)
    compile_launcher()
    log(f"{mode} run: {sizes}; work dir {workdir}")
    results: Results | None = None
    try:
        with minislurm(args) as (state_dir, reason):
            bench = slurm.SlurmBench(state_dir, workdir, sizes.timeout) if state_dir else None
            slurm_version = bench.version() if bench else None
            suite = Suite(sizes, workdir, bench, reason, log)
            suite.results.machine = facts.machine()
            suite.results.versions = facts.versions(slurm_version)
            results = suite.run()
            return results, slurm_version
    finally:
        # Failed jobs' outputs are there: keep them to look at.
        if args.keep_workdir or (results is not None and results.failures):
            log(f"kept {workdir} (scripts, job outputs)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
