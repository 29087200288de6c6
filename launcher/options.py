"""The command line: ``python -m launcher [options] [SCRIPT | -m MODULE | -c COMMAND] [ARGS...]``.

Shaped like ``python -m mpi4py.futures``: launcher options come first; the first
non-option word (or ``-m MODULE``, ``-c COMMAND``) starts the user's command line,
which is passed on untouched. Parsing is pure, so every rank parses the same argv to
the same result and only one rank needs to print an error.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

from launcher import __version__
from launcher.config import (
    LAYOUTS,
    ConfigError,
    listen_address,
    memory_bytes,
    positive_int,
    seconds,
    text,
)


class UsageError(Exception):
    """Bad command line: ``message`` is argparse's usage text plus the error."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class EarlyExit(Exception):
    """``--help`` or ``--version``: print ``message`` and exit 0."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Target:
    """What runs on the client rank as ``__main__``."""

    kind: str  # "demo", "script", "module" or "command"
    name: str  # path of the script (a file, a directory or a zip), module name, or code
    argv: tuple[str, ...] = ()  # sys.argv[1:] as the user code sees it

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "argv": list(self.argv)}


DEMO = Target("demo", "launcher.demo")


@dataclass(frozen=True)
class Options:
    """Flags as given; None means "not given on the command line"."""

    nthreads: int | None = None
    memory_limit: int | None = None
    local_directory: str | None = None
    interface: str | None = None
    layout: str | None = None
    dashboard: bool | None = None
    dashboard_address: str | None = None
    tls: bool | None = None
    nanny: bool | None = None
    startup_timeout: float | None = None
    summary: str | None = None
    report: str | None = None
    progress_interval: float | None = None
    progress: bool | None = None
    plan: bool = False
    check: bool = False
    verbose: int = 0
    target: Target = field(default=DEMO)


def _checked(check):
    """Turn a config validator into an argparse type (same rules for flags and config)."""

    def convert(raw: str):
        try:
            return check(raw)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = check.__name__
    return convert


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}\n")

    def exit(self, status: int = 0, message: str | None = None):  # type: ignore[override]
        raise EarlyExit(message or "")

    def print_help(self, file=None) -> None:
        raise EarlyExit(self.format_help())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m launcher",
        usage="%(prog)s [options] [SCRIPT | -m MODULE | -c COMMAND] [ARGS...]",
        description=(
            "Start a Dask cluster inside this MPI/Slurm job (scheduler, client and "
            "workers on its ranks) and run SCRIPT, MODULE or COMMAND as __main__ on the "
            "client rank with a Client already connected. Without SCRIPT, run a short demo. "
            "Defaults come from Dask's config (key 'launcher', see launcher.yaml)."
        ),
        epilog="Example: srun python -m launcher --interface ib0 my_analysis.py --year 2024",
    )
    size = parser.add_argument_group("worker sizing (default: from the Slurm allocation)")
    size.add_argument(
        "--nthreads",
        type=_checked(positive_int),
        metavar="N",
        help="threads per worker (default: $SLURM_CPUS_PER_TASK, else 1)",
    )
    size.add_argument(
        "--memory-limit",
        type=_checked(memory_bytes),
        metavar="BYTES",
        help="memory limit per worker, e.g. 4GiB (default: the worker's "
        "share of the allocation or node)",
    )
    size.add_argument(
        "--local-directory",
        type=_checked(text),
        metavar="DIR",
        help="base for worker spill directories (default: $LOCALSCRATCH, "
        "$SLURM_TMPDIR, $TMPDIR, /tmp)",
    )
    net = parser.add_argument_group("network and layout")
    net.add_argument(
        "--interface",
        type=_checked(text),
        metavar="IFACE",
        help="network interface for scheduler and workers, e.g. ib0",
    )
    net.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="compact: rank 0 scheduler+client, others workers (default); "
        "dedicated: 0 scheduler, 1 client, 2+ workers",
    )
    net.add_argument(
        "--dashboard-address",
        type=_checked(listen_address),
        metavar="ADDR",
        help="dashboard address (default :8787; a taken port falls back to a free one)",
    )
    net.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        default=None,
        help="do not serve the dashboard",
    )
    net.add_argument(
        "--insecure",
        dest="tls",
        action="store_false",
        default=None,
        help="plain TCP instead of TLS with a certificate made for this run",
    )
    net.add_argument(
        "--no-nanny",
        dest="nanny",
        action="store_false",
        default=None,
        help="run each worker inside its rank instead of under a nanny that restarts it",
    )
    net.add_argument(
        "--startup-timeout",
        type=_checked(seconds),
        metavar="SECONDS",
        help="how long to wait for the scheduler and all workers (default 30)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--summary",
        metavar="PATH",
        help="write a JSON summary of the run here at the end (also on failure)",
    )
    out.add_argument(
        "--report",
        metavar="PATH",
        help="write distributed's HTML performance report of the whole run here",
    )
    out.add_argument(
        "--progress-interval",
        type=_checked(seconds),
        metavar="SECONDS",
        help="print a progress line this often while your code runs (default 30)",
    )
    out.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress lines",
    )
    out.add_argument(
        "--graph",
        metavar="PATH",
        help="with the demo: draw its task graph to PATH (.svg or .png; needs graphviz)",
    )
    out.add_argument(
        "--plan",
        action="store_true",
        help="print the resolved plan as JSON and exit without starting anything",
    )
    out.add_argument(
        "--check",
        action="store_true",
        help="check this environment (MPI, Slurm, network, disk, TLS, versions), print a "
        "table with a verdict and a fix per line, and exit non-zero if a check fails",
    )
    out.add_argument(
        "-v", "--verbose", action="count", default=0, help="show Dask's logs (-vv: debug)"
    )
    out.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "-m",
        dest="module",
        metavar="MODULE",
        help="run library module MODULE as __main__ (like python -m)",
    )
    parser.add_argument(
        "-c",
        dest="command",
        metavar="COMMAND",
        help="run the Python code COMMAND as __main__ (like python -c)",
    )
    return parser


def _takes_value(parser: argparse.ArgumentParser) -> set[str]:
    return {
        flag
        for action in parser._actions
        if action.option_strings and action.nargs != 0
        for flag in action.option_strings
    }


def split_argv(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """Launcher options, and the user's command line that starts at SCRIPT, ``-m`` or ``-c``."""
    with_value = _takes_value(parser)
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv[:i], argv[i + 1 :]
        if word in ("-m", "-c"):
            return argv[: i + 2], argv[i + 2 :]
        if not word.startswith("-") or word == "-":
            return argv[:i], argv[i:]
        i += 2 if word in with_value else 1
    return argv, []


def parse(argv: list[str]) -> Options:
    """Options from argv; raises UsageError (exit 2) or EarlyExit (--help, --version)."""
    parser = build_parser()
    ours, theirs = split_argv(argv, parser)
    ns = parser.parse_args(ours)
    if ns.version:
        raise EarlyExit(f"launcher {__version__}")
    if ns.module is not None:
        target = Target("module", ns.module, tuple(theirs))
    elif ns.command is not None:
        target = Target("command", ns.command, tuple(theirs))
    elif theirs:
        target = Target("script", theirs[0], tuple(theirs[1:]))
    else:
        target = DEMO
    if ns.graph is not None:
        if target != DEMO:
            parser.error(
                "--graph draws the demo's task graph; in your own script call "
                ".visualize(filename=...) on the collection"
            )
        target = Target(DEMO.kind, DEMO.name, ("--graph", ns.graph))
    return Options(
        nthreads=ns.nthreads,
        memory_limit=ns.memory_limit,
        local_directory=ns.local_directory,
        interface=ns.interface,
        layout=ns.layout,
        dashboard=ns.dashboard,
        dashboard_address=ns.dashboard_address,
        tls=ns.tls,
        nanny=ns.nanny,
        startup_timeout=ns.startup_timeout,
        # Where the user ran the command: the script may os.chdir before they are
        # written (the summary at the end landed in the script's data directory).
        summary=os.path.abspath(ns.summary) if ns.summary else None,
        report=os.path.abspath(ns.report) if ns.report else None,
        progress_interval=ns.progress_interval,
        progress=ns.progress,
        plan=ns.plan,
        check=ns.check,
        verbose=ns.verbose,
        target=target,
    )
