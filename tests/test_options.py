"""The command line, shaped like ``python -m mpi4py.futures``: our options, then theirs."""

import os

import pytest

from launcher.options import DEMO, EarlyExit, Target, UsageError, parse

GIB = 1024**3


def test_no_target_runs_the_demo():
    assert parse([]).target == DEMO


def test_script_and_its_arguments_are_passed_untouched():
    opts = parse(["--nthreads", "2", "analysis.py", "--nthreads", "9", "-v", "x"])
    assert opts.nthreads == 2 and opts.verbose == 0
    assert opts.target == Target("script", "analysis.py", ("--nthreads", "9", "-v", "x"))


def test_module_target():
    opts = parse(["-v", "-m", "pkg.mod", "a", "-m", "b"])
    assert opts.verbose == 1
    assert opts.target == Target("module", "pkg.mod", ("a", "-m", "b"))


def test_command_target():
    opts = parse(["-v", "-c", "print(1)", "a", "-m", "b"])
    assert opts.verbose == 1
    assert opts.target == Target("command", "print(1)", ("a", "-m", "b"))


def test_double_dash_ends_our_options():
    assert parse(["--", "-weird.py", "a"]).target == Target("script", "-weird.py", ("a",))


def test_every_flag():
    opts = parse(
        [
            "--nthreads",
            "4",
            "--memory-limit",
            "2GiB",
            "--local-directory",
            "/ls",
            "--interface",
            "ib0",
            "--layout",
            "dedicated",
            "--dashboard-address",
            ":9999",
            "--no-dashboard",
            "--summary",
            "s.json",
            "--plan",
            "-vv",
            "--startup-timeout",
            "1m",
            "--memory-limit=3GiB",
        ]
    )
    assert (opts.nthreads, opts.memory_limit, opts.local_directory) == (4, 3 * GIB, "/ls")
    assert (opts.interface, opts.layout, opts.dashboard_address) == ("ib0", "dedicated", ":9999")
    assert opts.dashboard is False and opts.summary == os.path.abspath("s.json") and opts.plan
    assert opts.verbose == 2 and opts.startup_timeout == 60.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--memory-limit", "12XB"], "argument --memory-limit: expected a memory size"),
        (["--nthreads", "0"], "argument --nthreads: expected a whole number >= 1, got '0'"),
        (["--nthreads", "two"], "argument --nthreads"),
        (["--layout", "sideways"], "argument --layout: invalid choice"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--startup-timeout", "-3"], "argument --startup-timeout"),
        (["--dashboard-address", ":99999"], "argument --dashboard-address: expected an address"),
        (["-m"], "argument -m: expected one argument"),
        (["-c"], "argument -c: expected one argument"),
    ],
)
def test_bad_input_is_a_usage_error(argv, message):
    with pytest.raises(UsageError) as err:
        parse(argv)
    assert err.value.status == 2
    assert err.value.message.startswith("usage: python -m launcher")
    assert message in err.value.message


def test_help_and_version_exit_zero():
    with pytest.raises(EarlyExit, match="--memory-limit BYTES"):
        parse(["--help"])
    with pytest.raises(EarlyExit, match=r"launcher \d"):
        parse(["--version"])
