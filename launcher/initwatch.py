"""A watch on MPI_Init, which can block until the walltime with nothing left to notice.

MPI_Init waits for every process of the job through the process launcher's PMI
server. When a task never starts, or the server misreads a request (Slurm's pmi2
plugin with MPICH, see docs/admin-guide.md), it waits forever, and no Python code of
this process runs meanwhile: mpi4py holds the GIL inside MPI_Init, so a thread or a
signal handler would never get to run. A forked child can: if MPI_Init has not
returned within the startup timeout, it says so in one line and kills this process,
which ends the job step (mpirun and ``srun --kill-on-bad-exit`` end the other ranks).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable

from launcher.mpienv import close_pmi_connection


def watch_mpi_init(timeout: float, rank: int) -> Callable[[], None]:
    """Start the watch; call the result once MPI_Init has returned."""
    read_end, write_end = os.pipe()
    rank_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        _watch(read_end, write_end, timeout, rank, rank_pid)
    os.close(read_end)

    def returned() -> None:
        os.close(write_end)  # the child sees end-of-file and leaves at once
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    return returned


def _watch(read_end: int, write_end: int, timeout: float, rank: int, rank_pid: int) -> None:
    try:
        os.close(write_end)
        close_pmi_connection()
        ready, _, _ = select.select([read_end], [], [], timeout)
        if not ready:
            message = (
                f"launcher: rank {rank}: MPI_Init did not return within {timeout:.0f} s "
                "(a task that never started, or an MPI library and process launcher that "
                "do not work together: see 'python -m launcher --check'); ending the job; "
                "raise --startup-timeout if MPI_Init is just slow here\n"
            )
            os.write(2, message.encode())
            os.kill(rank_pid, signal.SIGKILL)  # had it died, the pipe would have said
    finally:
        os._exit(0)
