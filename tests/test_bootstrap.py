import os
import subprocess
import sys
import time

import dask

from launcher.forkserver import set_worker_environment


def test_process_start_time_is_when_the_process_started():
    # The kernel counts a process's start in clock ticks (10 ms): at most one tick early.
    before = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from launcher.bootstrap import process_start_time; print(process_start_time())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    after = time.time()
    assert result.returncode == 0, result.stderr
    started = float(result.stdout)
    assert before - 0.011 <= started <= after, (before, started, after)


def test_worker_environment_is_distributeds_with_the_users_values_winning(monkeypatch):
    environ = {"OMP_NUM_THREADS": "4", "MALLOC_TRIM_THRESHOLD_": "0"}  # the user's: kept
    monkeypatch.setattr(os, "environ", environ)
    configured = {"MKL_NUM_THREADS": None, "EXTRA": 7}  # unset one, add one
    with dask.config.set({"distributed.nanny.pre-spawn-environ": configured}):
        set_worker_environment()
    assert environ == {
        "OMP_NUM_THREADS": "4",
        "MALLOC_TRIM_THRESHOLD_": "0",
        "OPENBLAS_NUM_THREADS": "1",  # distributed's default
        "EXTRA": "7",
    }


def test_the_worker_environment_defaults_are_distributeds():
    # launcher.yaml repeats them (they are needed before distributed is imported):
    # they must not drift from distributed's own.
    import distributed
    import yaml

    from launcher.config import PACKAGE_DEFAULTS

    with open(os.path.join(os.path.dirname(distributed.__file__), "distributed.yaml")) as f:
        theirs = yaml.safe_load(f)["distributed"]["nanny"]["pre-spawn-environ"]
    assert PACKAGE_DEFAULTS["distributed"]["nanny"]["pre-spawn-environ"] == theirs
