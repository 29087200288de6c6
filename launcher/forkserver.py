"""Start worker processes without a second ``import distributed``.

A nanny starts its worker in a new process. With multiprocessing's default ``spawn``
that process is a fresh interpreter which imports distributed again (about 0.4 s of
CPU), on the path to a ready cluster, and again at every restart. multiprocessing's
forkserver avoids that only if its server has distributed imported, and the server is
itself a fresh interpreter that must import it once more: one more import per worker
rank, on nodes where every core is running a rank.

So a rank that will run a nanny imports distributed before MPI_Init and forks the
fork server from itself: the server starts with everything imported, shares those
pages with the rank, holds no MPI state (MPI is not initialised yet), and every worker
it forks starts in a fraction of a second. Python's forkserver module is driven through
its ``main`` and three attributes of its module-level ``ForkServer``. The nanny's
other helper, multiprocessing's resource tracker, is forked the same way instead of
being spawned as one more fresh interpreter.

Where that cannot be done, multiprocessing starts its own server, preloaded with
distributed (launcher/preload.py), before MPI_Init too (so that it holds no MPI
state): only slower. That is the case on Pythons whose forkserver authenticates its
clients with a key (3.14).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
from multiprocessing import connection, forkserver, resource_tracker, util

import dask.config

from launcher.config import PACKAGE_DEFAULTS
from launcher.interrupt import SIGNALS, python_signal_defaults
from launcher.mpienv import close_pmi_connection

_STATE = ("_forkserver_address", "_forkserver_alive_fd", "_forkserver_pid")
#: glibc's mallopt() parameter that MALLOC_TRIM_THRESHOLD_ sets as a process starts.
_M_TRIM_THRESHOLD = -1
_TRACKER_STATE = ("_fd", "_pid")  # what ResourceTracker.ensure_running sets
_server_started = False


def _forkable(server: object) -> bool:
    """Can this process fork the server from itself, and would that save an import?"""
    known = all(hasattr(server, name) for name in _STATE)
    return known and not hasattr(server, "_forkserver_authkey") and "distributed" in sys.modules


def set_worker_environment() -> None:
    """distributed's ``distributed.nanny.pre-spawn-environ`` in this rank's environment,
    before ``import distributed`` loads numpy.

    A nanny sets these in its own environment just before it starts a worker process,
    for the new interpreter to read as it starts: OMP_NUM_THREADS=1 and the like (numpy's
    BLAS sizes its thread pool when numpy is loaded), so that a worker's Dask threads do
    not each run a BLAS pool of one thread per core, and MALLOC_TRIM_THRESHOLD_ (glibc
    reads it at the process's first malloc), so that freed memory goes back to the
    system. A worker forked from the fork server, itself forked from the rank after the
    import, read neither (distributed's Nanny docstring warns of it for forkserver): its
    BLAS ran a thread per core of the node or task. So they are set here, from where
    distributed takes them (its defaults, repeated in launcher.yaml since distributed is
    not imported yet, then the user's Dask config; a variable already in the environment
    wins, as there), and the fork server applies the trim threshold (``_serve``). The
    nanny does no computing; like distributed's, it gets them too.
    """
    defaults = PACKAGE_DEFAULTS["distributed"]["nanny"]["pre-spawn-environ"]
    configured = dask.config.get("distributed.nanny.pre-spawn-environ", default=None) or {}
    for name, value in {**defaults, **configured}.items():
        if value is not None:
            os.environ.setdefault(name, str(value))


def trim_freed_memory() -> None:
    """MALLOC_TRIM_THRESHOLD_ for a process that is running already: glibc reads the
    variable only as a process starts."""
    trim, libc = os.environ.get("MALLOC_TRIM_THRESHOLD_", ""), ctypes.CDLL(None)
    if trim.isdigit() and hasattr(libc, "mallopt"):  # glibc's
        libc.mallopt(_M_TRIM_THRESHOLD, int(trim))


def _serve(listener: socket.socket, alive_r: int, alive_w: int) -> None:
    """The forked child: become multiprocessing's fork server."""
    try:
        trim_freed_memory()
        os.close(alive_w)
        # The server stays deaf to the job's signals; the processes it forks do not.
        # (forkserver.main ignores SIGINT itself and gives its children this handler.)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.register_at_fork(after_in_child=python_signal_defaults)
        close_pmi_connection()  # nor may the workers forked from here hold it
        forkserver.main(listener.fileno(), alive_r, [], None, None)
    finally:
        os._exit(0)


def _fork_server() -> None:
    """Without the server's lock: the rank has one thread here, and a lock held across
    the fork stays held in the server and in every worker process forked from it, where
    a task's ``multiprocessing.Pool`` (``distributed.worker.daemon: false``) waited for
    it forever."""
    server = forkserver._forkserver
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


def _track_resources(alive_r: int) -> None:
    """The forked child: become multiprocessing's resource tracker, holding only its
    pipe and stderr (not the rank's PMI connection, which hydra and slurmstepd watch,
    nor its stdout, which mpirun and srun wait on)."""
    try:
        os.closerange(0, 2)
        os.closerange(3, alive_r)
        os.closerange(alive_r + 1, os.sysconf("SC_OPEN_MAX"))
        resource_tracker.main(alive_r)
    finally:
        os._exit(0)


def _fork_resource_tracker() -> None:
    """multiprocessing spawns its resource tracker as a fresh interpreter: 45-70 ms of
    CPU per rank here (1-2 s on 32 ranks sharing 2 cores), for a loop that reads a
    pipe. Forked from the rank, before MPI_Init, it costs a fork. Driven through the
    attributes in ``_TRACKER_STATE``; it is ``main`` that runs in the child."""
    tracker = resource_tracker._resource_tracker
    alive_r, alive_w = os.pipe()
    pid = os.fork()  # without the tracker's lock, as in _fork_server
    if pid == 0:
        _track_resources(alive_r)
    os.close(alive_r)
    tracker._fd, tracker._pid = alive_w, pid


def start_worker_helpers(fork_server: bool) -> None:
    """Start the helper processes of a nanny now, deaf to the job's signals.

    Slurm (and hydra) signal every process of the job. multiprocessing's resource
    tracker ignores SIGTERM and SIGINT by itself but dies of SIGUSR1 (the walltime
    warning), is relaunched, and then prints a KeyError traceback for every resource it
    no longer knows; a fork server would die of SIGTERM. An ignored signal stays ignored
    across fork and exec, so they are started while these signals are ignored here.

    ``fork_server``: also start the fork server (see the module docstring), and fork the
    resource tracker from this process rather than spawn it. Only before MPI_Init,
    while the process has no other thread.
    """
    global _server_started
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in SIGNALS}
    try:
        tracker = resource_tracker._resource_tracker
        if fork_server and all(hasattr(tracker, name) for name in _TRACKER_STATE):
            _fork_resource_tracker()
        else:
            resource_tracker.ensure_running()
        if not fork_server:
            return
        if _forkable(forkserver._forkserver):
            _fork_server()
        else:
            forkserver.set_forkserver_preload(["launcher.preload"])
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
