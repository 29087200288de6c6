"""Start worker processes without a second ``import distributed`` on the critical path.

A nanny starts its worker in a new process. With multiprocessing's default ``spawn``
that process is a fresh interpreter which imports distributed (about 0.4 s of CPU)
only once the rank has asked for a worker, on the path to a ready cluster, and again
at every restart. With multiprocessing's forkserver, preloaded with distributed, each
worker is forked from a server that has imported it already.

The launcher starts that server before MPI_Init, when the rank has imported nothing
heavy: the server is a fresh interpreter (fork and exec at once, so it holds no MPI
state and none of the rank's descriptors, the PMI connection included), and it imports
distributed while the rank initialises MPI and imports distributed itself. The rank
stays small until MPI_Init: under srun's pmi2 plugin with PyPI MPICH, ranks that
imported distributed before MPI_Init failed MPI_Init now and then on a multi-node test
Slurm ("UCX ERROR failed to unpack address", garbled PMI requests), while ranks that
imported it after never did.
"""

from __future__ import annotations

import contextlib
import os
import signal
from multiprocessing import forkserver, resource_tracker

from launcher.interrupt import SIGNALS

_server_started = False


def start_worker_helpers(fork_server: bool) -> None:
    """Start the helper processes of a nanny now, deaf to the job's signals.

    Slurm (and hydra) signal every process of the job. multiprocessing's resource
    tracker ignores SIGTERM and SIGINT by itself but dies of SIGUSR1 (the walltime
    warning), is relaunched, and then prints a KeyError traceback for every resource it
    no longer knows; a fork server would die of SIGTERM. An ignored signal stays ignored
    across fork and exec, so they are started while these signals are ignored here.

    ``fork_server``: also start the fork server (see the module docstring); before
    MPI_Init.
    """
    global _server_started
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in SIGNALS}
    try:
        resource_tracker.ensure_running()
        if fork_server:
            forkserver.set_forkserver_preload(["distributed"])
            forkserver.ensure_running()
            _server_started = True
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def use_fork_server() -> None:
    """Have nannies start workers through the fork server, if this rank started one."""
    if not _server_started:
        return
    import dask
    import distributed.utils

    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    # distributed would otherwise import every optional package it knows (pandas,
    # numpy, ...) in this process, to preload them into a server that is running.
    distributed.utils._forkserver_preload_set = True


def stop_worker_helpers() -> None:
    """End this rank's helper processes at once, and reap them, as the rank ends.

    Left alone, the fork server notices the rank's end and leaves through Python's
    teardown with distributed imported, 0.3 s or more (far more on a busy node), which
    mpirun waits for: it waits for every process holding the job's output. And helpers
    that outlive their rank are reaped by the node's init process, whenever it gets to
    it: until then Slurm's process tracking counts them, and srun waited 3 s for two
    such zombies per rank on the test Slurm. The nanny has stopped the workers already.
    """
    if _server_started:
        pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    stop_tracker = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop_tracker is not None:
        with contextlib.suppress(OSError):
            stop_tracker()  # it cleans up what workers leaked, then exits; reaped here
