"""Start worker processes without a second ``import distributed``.

A nanny starts its worker in a new process. With multiprocessing's default ``spawn``
that process is a fresh interpreter which imports distributed again (about 0.4 s of
CPU), which roughly doubles the start-up cost of every worker rank, and again at every
restart. multiprocessing's forkserver avoids it only if the server has distributed
imported, and its server is itself a fresh interpreter that must import it once more.

So the launcher forks the forkserver from the rank itself, after the rank has imported
distributed and before MPI is initialised: the server starts with everything imported,
shares those pages with the rank, holds no MPI state, and every worker it forks starts
in a fraction of a second. Python's forkserver module is driven through its documented
``main`` and three attributes of its module-level ``ForkServer``; where they are not as
expected (a future Python), the nanny falls back to ``spawn``, only slower.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from multiprocessing import connection, forkserver, resource_tracker, util

import dask

from launcher.interrupt import SIGNALS

log = logging.getLogger("launcher")

_STATE = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid")


def _supported(server: object) -> bool:
    # Python 3.14 authenticates forkserver clients with a key this code does not set up.
    return all(hasattr(server, name) for name in _STATE) and not hasattr(
        server, "_forkserver_authkey"
    )


def _serve(listener: socket.socket, alive_r: int, alive_w: int) -> None:
    """The forked child: become multiprocessing's fork server."""
    try:
        os.close(alive_w)
        # The PMI connection belongs to the rank; this process and its workers must not
        # hold it open (a launcher watches it to see the rank go).
        pmi_fd = os.environ.get("PMI_FD", "")
        if pmi_fd.isdigit():
            os.close(int(pmi_fd))
        forkserver.main(listener.fileno(), alive_r, [], None, None)
    finally:
        os._exit(0)


def _fork_server() -> bool:
    server = forkserver._forkserver
    if not _supported(server):
        log.debug("this Python's forkserver is not supported; nannies will spawn")
        return False
    with server._lock:
        if server._forkserver_pid is not None:
            return True
        listener = socket.socket(socket.AF_UNIX)
        address = connection.arbitrary_address("AF_UNIX")
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _serve(listener, alive_r, alive_w)
        listener.close()
        os.close(alive_r)
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    # distributed would otherwise import every optional package it knows, in this
    # process, to preload them into a server that is already running.
    import distributed.utils

    distributed.utils._forkserver_preload_set = True
    return True


def start_worker_helpers(fork_server: bool) -> None:
    """Start the helper processes of a nanny now, deaf to the job's signals.

    Slurm (and hydra) signal every process of the job. multiprocessing's resource
    tracker ignores SIGTERM and SIGINT by itself but dies of SIGUSR1 (the walltime
    warning), is relaunched, and then prints a KeyError traceback for every resource it
    no longer knows; a fork server would die of SIGTERM. An ignored signal stays ignored
    across fork and exec, so they are started while these signals are ignored here.

    ``fork_server``: also fork the fork server (see the module docstring). Only before
    MPI_Init, after ``import distributed``, while the process has no other threads.
    """
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in SIGNALS}
    try:
        resource_tracker.ensure_running()
        if fork_server:
            _fork_server()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
