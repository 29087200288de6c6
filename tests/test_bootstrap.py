import subprocess
import sys
import time


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
