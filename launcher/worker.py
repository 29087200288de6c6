"""The worker classes dask-mpi starts on worker ranks, listening to MPI as well as to Dask.

dask-mpi stops workers only through the scheduler (``Client.shutdown()``), and a
worker that misses that message retries until the walltime (dask-mpi #58, #87). Here
the client rank's STOP message over MPI closes the worker directly, so shutdown does
not depend on the Dask comms being healthy. dask-mpi's ``execute`` passes
``worker_options`` to the class, which is how the listener gets in.

``MPINanny`` is the default: the MPI rank runs a nanny and the Dask worker is its
child process, so a worker killed by a signal or by the out-of-memory killer is
restarted in place while the rank (and so the MPI job) lives on. dask-mpi's
``nanny=True`` is broken (it raises unconditionally), which is why the class is passed
as ``worker_class``. ``MPIWorker`` runs the worker inside the rank (``--no-nanny``):
leaner, but one dead worker then ends the whole job (dask-mpi #31).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import spawn
from typing import Any

from dask.utils import format_bytes
from distributed import Nanny, Worker
from tornado.ioloop import PeriodicCallback

from launcher.interrupt import SIGNALS, python_signal_defaults
from launcher.mpienv import leave_mpi_job
from launcher.script_context import print_as_it_goes, worker_prints_once

log = logging.getLogger("launcher")

#: How soon a worker notices the job's end.
STOP_POLL_SECONDS = 0.01
#: How often a worker looks whether it is paused for memory Dask cannot free.
PAUSED_CHECK_SECONDS = 1
ENDED = ("closing", "closing_gracefully", "closed", "failed")


class _StopListening:
    """Say ``ready`` once started; watch ``stop_check`` from a thread and close when it
    says so; say ``lost`` (why) if the worker ends before that.

    A thread that sleeps between checks, not a tornado ``PeriodicCallback``: each turn
    of the event loop for a timer costs far more CPU than the check itself. Checking
    100 times a second, an idle nanny rank used 36 ms of CPU a second that way and 26 ms
    this way (4 ranks, here), CPU taken from the tasks of the worker sharing its core.
    """

    _stop_check: Callable[[], bool]
    _ready: Callable[[], None]
    _lost: Callable[[str], None]
    _closing: asyncio.Task | None = None
    _lost_said = False

    def _listen_for_stop(
        self, stop_check: Callable[[], bool], ready: Callable[[], None], lost: Callable[[str], None]
    ) -> None:
        self._stop_check = stop_check
        self._ready = ready
        self._lost = lost

    def _ending_because(self, reason: str) -> None:
        """The worker is closing: unless the job is ending, it is lost to the job (the
        scheduler gives its tasks to the others), which the rank reports."""
        if self._closing is None and not self._lost_said:
            self._lost_said = True
            self._lost(reason)

    async def start_unsafe(self):  # type: ignore[no-untyped-def]
        """Started means registered with the scheduler, for a worker and for a nanny
        (whose worker process has registered): the client rank may start user code."""
        threading.Thread(
            target=self._watch_stop,
            args=(asyncio.get_running_loop(),),
            name="launcher-stop",
            daemon=True,
        ).start()
        started = await super().start_unsafe()  # type: ignore[misc]
        self._ready()
        return started

    def _watch_stop(self, loop: asyncio.AbstractEventLoop) -> None:
        while self.status.name not in ENDED:  # type: ignore[attr-defined]
            time.sleep(STOP_POLL_SECONDS)
            if self.status.name in ("running", "paused") and self._stop_check():  # type: ignore[attr-defined]
                loop.call_soon_threadsafe(self._begin_stop)
                return

    def _begin_stop(self) -> None:
        self._closing = asyncio.ensure_future(self.stop_at_job_end())

    async def stop_at_job_end(self) -> None:
        raise NotImplementedError


def _file_system_of(path: str) -> str:
    """The mount point of the file system that holds ``path``."""
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


class LauncherWorker(Worker):
    """The launcher's Dask worker, in the rank (``--no-nanny``) or in a nanny's process.

    It closes without CommClosedError tracebacks: Worker.close closes the connection
    pool under a heartbeat still in flight, which then logs a CommClosedError traceback
    (part of distributed #7192), so the last heartbeat is allowed to finish first.

    And it samples its tasks for Dask's profile only while it runs some. distributed
    wakes the worker's event loop every ``distributed.worker.profile.interval`` (10 ms)
    for that, busy or not, and an idle worker that samples nothing still pays for the
    wake-ups (part of distributed #5000): 32 ms of CPU a second against 10 ms without
    them (worker processes of an idle 8-rank job, here), CPU taken from busy processes
    wherever they share cores, as on a laptop or a node with more ranks than cores.
    While tasks run, the profile is sampled as before.

    And it does not stay paused for memory for good (``_check_paused``).
    """

    _beat: asyncio.Future | None = None
    _executing = 0  # tasks running now
    _memory_at_start = 0  # outside Dask's data, once registered
    # Paused for good ("outside" its data, data "unspillable") or not (None), since
    # when, and with how much spilled then (spilling more is progress).
    _stuck_cause: str | None = None
    _stuck_since = 0.0
    _stuck_on_disk = 0
    _leaving: asyncio.Future | None = None
    _close_begun = False

    def __init__(self, *args, paused_timeout: float, **kwargs) -> None:
        print_as_it_goes()  # what tasks print reaches the log as they run
        worker_prints_once()  # and once, with get_client() in a task
        super().__init__(*args, **kwargs)
        self._paused_timeout = paused_timeout
        if self.memory_manager.memory_limit and self.memory_manager.memory_pause_fraction:
            self.periodic_callbacks["launcher-paused"] = PeriodicCallback(
                self._check_paused, PAUSED_CHECK_SECONDS * 1000
            )

    async def execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with self._running_task():
            return await super().execute(*args, **kwargs)

    async def actor_execute(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with self._running_task():
            return await super().actor_execute(*args, **kwargs)

    @contextlib.contextmanager
    def _running_task(self) -> Iterator[None]:
        """Count the tasks running (on the event loop's thread, like every caller) and
        wake the profile's sampler for them."""
        self._executing += 1
        sampler = self.periodic_callbacks.get("profile")  # None if profiling is off
        if sampler is not None and not sampler.is_running():
            sampler.start()
        try:
            yield
        finally:
            self._executing -= 1

    def trigger_profile(self) -> None:
        """Sample the running tasks, or stop sampling until the next task starts
        (rather than when each task ends, which would cost two timer changes per task
        in a stream of tiny ones)."""
        if not self._executing:
            self.periodic_callbacks["profile"].stop()
            return
        super().trigger_profile()

    def _memory_dask_cannot_free(self) -> int:
        """The process's memory beyond the data Dask holds in it: what spilling every
        key to disk would leave (memory the tasks' libraries or a leak kept)."""
        spilled = getattr(self.data, "spilled_total", None)  # None: spilling disabled
        managed = self.state.nbytes - (spilled.memory if spilled is not None else 0)
        return self.monitor.get_process_memory() - managed

    async def start_unsafe(self):  # type: ignore[no-untyped-def]
        started = await super().start_unsafe()
        self._memory_at_start = self._memory_dask_cannot_free()  # before any task
        return started

    def _check_paused(self) -> None:
        """Restart a worker that stays paused for memory Dask cannot free, or let it
        leave the job where a restart cannot help.

        distributed pauses a worker whose process memory is over its pause fraction
        (80%) until spilling brings it down, and two things keep it paused for good:
        memory outside Dask's data (a library's cache, a leak in the tasks), which is
        not spilled, and data that cannot be spilled (its spill directory's disk is
        full, a value does not pickle). Once all workers are paused, or the tasks that
        need a paused worker's data wait for it, the job waits for its walltime:
        measured with a task that kept 40 MB in a module (2 workers paused with 19 of
        40 tasks done), and with a 64-MB scratch file system (16 arrays of 50 MB held,
        the tasks that read them waiting, and an ERROR traceback about the full disk
        every few seconds). distributed #3761; restarting paused workers is #5999, open.

        After ``paused-timeout`` seconds like that, running no task (and, with data in
        memory, spilling none of it), the worker closes gracefully, handing its data
        to the others. Paused by memory outside its data, its nanny starts a fresh
        process, as at the end of a worker's ``lifetime`` (when, JobScheduler says).
        A worker without a nanny, one whose process was over the pause fraction before
        any task (a new one would pause too), and one whose data cannot be spilled
        leave the job instead, which goes on with the others and fails, saying why,
        once none is left."""
        memory = self.memory_manager
        assert memory.memory_limit and memory.memory_pause_fraction
        pause_at = memory.memory_pause_fraction * memory.memory_limit
        outside = self._memory_dask_cannot_free()
        spilled = getattr(self.data, "spilled_total", None)  # None: spilling disabled
        on_disk = spilled.disk if spilled is not None else 0
        in_memory = len(getattr(self.data, "fast", ()))
        if self.status.name != "paused" or self._executing:
            cause = None
        elif outside > pause_at:
            cause = "outside"
        elif in_memory and on_disk == self._stuck_on_disk:  # spilling made no progress
            cause = "unspillable"
        else:
            cause = None
        if cause != self._stuck_cause or on_disk != self._stuck_on_disk:
            self._stuck_cause, self._stuck_on_disk = cause, on_disk
            self._stuck_since = time.monotonic()
        paused_for = time.monotonic() - self._stuck_since
        if cause is None or paused_for < self._paused_timeout or self._leaving is not None:
            return
        memory_flags = "more memory (--mem-per-cpu, --cpus-per-task, --memory-limit)"
        more = f"give workers {memory_flags}"
        if cause == "unspillable":
            where = _file_system_of(self.local_directory)
            why = (
                f"paused for memory for {paused_for:.0f} s, holding the data of {in_memory} "
                f"keys in memory that Dask could not spill to disk (its error above says "
                f"why; {format_bytes(shutil.disk_usage(where).free)} free on {where}, where "
                f"it spills): give it more scratch space (--local-directory on a larger "
                f"file system, Saga's --gres=localscratch:SIZE) or {memory_flags}"
            )
            self._leaving = asyncio.ensure_future(self._close_handing_over(False, why))
            return
        stuck = (
            f"paused for memory for {paused_for:.0f} s with nothing Dask can spill: its "
            f"process holds {format_bytes(outside)} of its "
            f"{format_bytes(memory.memory_limit)} limit outside Dask's data, over the "
            f"{memory.memory_pause_fraction:.0%} at which Dask pauses it"
        )
        if self.nanny is None:
            why = f"{stuck}; without a nanny it cannot be restarted: {more}"
        elif self._memory_at_start > pause_at:
            why = (
                f"{stuck}; a new process would pause too, as this one held "
                f"{format_bytes(self._memory_at_start)} before any task: {more}"
            )
        else:
            why = f"{stuck} (memory its tasks or their libraries kept); its worker process "
            why += f"is restarted: {more}, or find what holds it"
            self._leaving = asyncio.ensure_future(self._restart(why))
            return
        self._leaving = asyncio.ensure_future(self._close_handing_over(False, why))

    async def _restart(self, why: str) -> None:
        try:
            may = await self.scheduler.launcher_may_restart_paused(worker=self.address)
        except OSError:  # the scheduler is going: so is the job
            may = False
        if not may:
            self._leaving = None  # asked again at the next check
            return
        log.warning("worker rank %s on %s: %s", self.name, socket.gethostname(), why)
        reason = "launcher: restarted, paused for memory Dask cannot free"
        await self._close_handing_over(True, reason)

    async def _close_handing_over(self, restart: bool, reason: str) -> None:
        """distributed's ``close_gracefully``: the scheduler moves this worker's data to
        the others and takes it out of the cluster, then it closes (and its nanny,
        unless ``restart``)."""
        with contextlib.suppress(OSError):  # the scheduler is going: close all the same
            await self.scheduler.retire_workers(
                workers=[self.address],
                close_workers=False,
                remove=True,
                stimulus_id=f"launcher-paused-{time.time()}",
            )
        await self.close(nanny=not restart, reason=reason)

    def handle_worker_status_change(self, status: str, stimulus_id: str) -> None:
        """distributed's, until this worker closes. The scheduler's word that a worker
        is closing gracefully travels on its stream, apart from the reply to
        ``retire_workers``, and often came after the worker had begun to close (in 2
        of 3 runs of the tests where workers leave for memory): an ERROR "Invalid
        Worker.status transition: Status.closing -> Status.closing_gracefully" in the
        job's log. A closing worker has no status left to change to."""
        if not self._close_begun:
            super().handle_worker_status_change(status, stimulus_id)

    async def handle_scheduler(self, comm):  # type: ignore[no-untyped-def]
        """distributed's, with the error as the close reason. A task this worker cannot
        unpickle (from a module the client imports and the worker cannot: distributed
        #1341) breaks the whole stream from the scheduler and closes the worker with
        the bare reason "worker-handle-scheduler-connection-broken", the error only in
        a traceback that tornado logs; as the reason, the rank reports it instead."""
        reason = "worker-handle-scheduler-connection-broken"
        try:
            await self.handle_stream(comm)
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
        finally:
            await self.close(reason=reason)

    async def heartbeat(self) -> None:
        self._beat = asyncio.ensure_future(super().heartbeat())
        await self._beat

    async def close(self, *args, **kwargs):  # type: ignore[override]
        if self._close_begun:
            # The first close waits for the heartbeat below, and distributed's sets
            # "closing" only after it: a second close meanwhile (the scheduler's stream
            # ending under close_gracefully(restart=True), which closes with nanny=True)
            # went on as if first, and told the nanny to close instead of restarting.
            # As distributed's own, the first caller's close stands.
            await self.finished()
            return None
        self._close_begun = True
        if self.status.name not in ("closing", "closed", "failed"):
            self.periodic_callbacks["heartbeat"].stop()
            if self._beat is not None and not self._beat.done():
                with contextlib.suppress(Exception):  # its own errors are logged upstream
                    await asyncio.wait_for(asyncio.shield(self._beat), timeout=2)
        return await super().close(*args, **kwargs)


class MPIWorker(_StopListening, LauncherWorker):
    """The Dask worker in the MPI rank itself."""

    def __init__(
        self,
        *args,
        stop_check: Callable[[], bool],
        ready: Callable[[], None],
        lost: Callable[[str], None],
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._listen_for_stop(stop_check, ready, lost)

    async def close(self, *args, reason: str = "worker-close", **kwargs):  # type: ignore[override]
        self._ending_because(reason)
        return await super().close(*args, reason=reason, **kwargs)

    async def stop_at_job_end(self) -> None:
        # executor_wait=False: a task still running in a thread cannot be interrupted,
        # and the rank exits right after, so do not wait for it.
        await self.close(reason="launcher: job finished", executor_wait=False, timeout=5)


#: Added to a nanny's worker process's out-of-memory score: half of the job's memory,
#: so that a rank is taken before a worker process only if it holds that much more.
OOM_SCORE_ADJ = 500


def _first_to_go_short_of_memory() -> None:
    """When the job runs out of memory, the kernel kills the process with the highest
    score, mostly its memory: the worker whose task ran out, and then, if memory is
    still short, the next largest. A worker process is the one to lose (its nanny
    starts another, its tasks run again); a rank (a nanny, the scheduler, the script)
    ends the whole job. Measured in a 1.5-GiB cgroup: 4 ms after the kernel killed the
    worker whose task took the memory, before that memory was given back, a second
    kill took rank 0, and the job ended with hydra's "BAD TERMINATION", exit 9.
    Raising one's own score needs no privilege; the processes its tasks start inherit
    it."""
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as score:
        score.write(str(OOM_SCORE_ADJ))


def _left_to_the_rank(signum: int, frame: object) -> None:
    """A job's signal in a nanny's worker process (see NannyChildWorker)."""


class NannyChildWorker(LauncherWorker):
    """The worker in the process a nanny starts. Slurm signals every process of a job
    step (scancel, time limit, --signal), so the worker processes get SIGTERM or
    SIGUSR1 too: they leave those to their rank, which ends the job in order, instead
    of dying at once and being restarted by their nanny during the shutdown.

    With a handler that does nothing, not by ignoring them: an ignored signal stays
    ignored across fork and exec, so every process a task started (a
    ``multiprocessing.Pool``, a program run with ``subprocess``) was deaf to SIGTERM,
    and leaving ``with Pool()`` (which terminates its workers) waited forever. A
    handler is reset by exec, and by fork through ``python_signal_defaults``.

    It leads a process group of its own, which the processes its tasks start join, so
    that they end with it (``MPINanny._end_what_its_tasks_started``). And it is the
    first the kernel's out-of-memory killer takes (``_first_to_go_short_of_memory``)."""

    def __init__(self, *args, **kwargs) -> None:
        _first_to_go_short_of_memory()
        for signum in SIGNALS:
            signal.signal(signum, _left_to_the_rank)
        os.register_at_fork(after_in_child=python_signal_defaults)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        leave_mpi_job()  # before any task runs
        super().__init__(*args, **kwargs)
        self.periodic_callbacks["launcher-orphan"] = PeriodicCallback(self._check_rank, 500)

    def _check_rank(self) -> None:
        """A worker whose rank was killed (SIGKILL, node trouble) must not outlive the
        job, busy with a task nobody will collect: leave at once.

        The rank is the process that asked for this one (its nanny), not necessarily
        its parent: under the fork server (launcher/forkserver.py) the parent is the
        server. multiprocessing knows the rank and sees it go through a pipe."""
        rank = multiprocessing.parent_process()
        if rank is not None and not rank.is_alive():
            if os.getpgrp() == os.getpid():  # with what its tasks started
                os.killpg(os.getpid(), signal.SIGKILL)
            os._exit(1)


#: The name distributed's nanny gives the process it starts (``WorkerProcess.start``).
WORKER_PROCESS_NAME = "Dask Worker process (from Nanny)"


def worker_processes_leave_the_script_alone() -> None:
    """A worker process does not import the rank's ``__main__`` module, which in one
    process (no mpirun) is the user's script once it runs.

    multiprocessing has a child it starts through a fork server (or spawns) import its
    parent's ``__main__`` as ``__mp_main__``, running its top level, which is why a
    script that starts a ``LocalCluster`` needs ``if __name__ == "__main__":``. Scripts
    written for an in-job cluster have none, and a worker process the nanny started
    again while the script ran (after an out-of-memory kill, ``client.restart()``) ran
    the script: its ``Client()`` made a cluster there, the process failed, and the
    nanny started it again and again until the walltime. Tasks do not need it: Dask
    pickles the functions and classes a script defines by value."""
    original = spawn.get_preparation_data
    if getattr(original, "leaves_main_to_workers", False):
        return

    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if name == WORKER_PROCESS_NAME:
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    get_preparation_data.leaves_main_to_workers = True  # type: ignore[attr-defined]
    spawn.get_preparation_data = get_preparation_data


class MPINanny(_StopListening, Nanny):
    """A ``distributed.Nanny`` in the MPI rank, its worker in a child process."""

    _memory_stop_seen = -1  # distributed's NannyMemoryManager._last_terminated_pid
    _worker_group: int | None = None  # the worker process's pid, its process group

    def __init__(
        self,
        *args,
        stop_check: Callable[[], bool],
        ready: Callable[[], None],
        lost: Callable[[str], None],
        **kwargs,
    ) -> None:
        kwargs.setdefault("worker_class", NannyChildWorker)
        worker_processes_leave_the_script_alone()
        super().__init__(*args, **kwargs)
        self._listen_for_stop(stop_check, ready, lost)
        self._environ_at_start = dict(os.environ)
        self._environ_passed: dict[str, str] = {}

    def close_gracefully(self, reason: str = "nanny-close-gracefully") -> None:
        """What a worker process closing on its own tells its nanny (which then does
        not restart it), with its reason."""
        self._ending_because(reason)
        super().close_gracefully(reason)
        # The worker process then waits 2 s before it exits: distributed's
        # WorkerProcess._run joins its "Nanny stop queue watch" thread (timeout=2) before
        # it puts the stop message that thread waits for (ExitStack callbacks run last
        # first). A worker closing on its own (client.retire_workers, a lost worker)
        # thus held up the job's end by 2 s. The message WorkerProcess.kill would send
        # lets that thread end at once; the worker is closing already, so it only waits.
        process = self.process
        if process is not None and process.child_stop_q is not None:
            with contextlib.suppress(ValueError, OSError):
                process.child_stop_q.put({"op": "stop", "reason": reason})

    async def instantiate(self):  # type: ignore[no-untyped-def]
        self._pass_environ_changes()
        try:
            return await super().instantiate()
        finally:
            started = self.process.process if self.process is not None else None
            if started is not None and started.pid is not None:
                self._worker_group = started.pid

    def _pass_environ_changes(self) -> None:
        """Hand what this process has put in ``os.environ`` since the nanny started to
        its next worker process. distributed spawns that process from the nanny, which
        it inherits them from; the launcher forks it from a fork server that has the
        rank's environment from before the nanny (distributed's Nanny docstring warns
        of forkserver and the environment), so a ``NannyPlugin`` with ``restart =
        True`` that set a variable in its ``setup``, or a nanny preload, set it for
        nothing. They go in the nanny's ``env``, which the worker process applies as it
        starts, under what was given there (``env=``, ``distributed.nanny.environ``,
        the ``Environ`` plugin), which wins over inherited variables in distributed
        too. A variable removed is not removed there."""
        for name, value in os.environ.items():
            if self._environ_at_start.get(name) == value:
                continue
            given = self.env.get(name)
            if given is None or given == self._environ_passed.get(name):
                self.env[name] = self._environ_passed[name] = value

    def _end_what_its_tasks_started(self) -> None:
        """Once its worker process has ended, end the processes its tasks started.

        They outlived it: a program a task ran with ``subprocess`` (or a Pool's workers)
        when the job ended during that task, or when the process was killed for memory
        (then often the program that held the memory). Holding the rank's output, they
        kept mpirun waiting after the job's result, until they ended on their own (a
        60-s program: the job hung 60 s), and alive beside the restarted worker they
        kept their memory. They are in the worker process's group (NannyChildWorker)."""
        group, self._worker_group = self._worker_group, None
        if group is not None:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)

    async def _on_worker_exit(self, exitcode: int) -> None:
        self._end_what_its_tasks_started()
        # distributed's starts a new worker process when the nanny is not closing yet,
        # which it is not while stop_at_job_end below kills the worker: at the job's end
        # a nanny started a worker that then failed to register ("name taken") and left
        # its semaphores behind.
        if self._closing is not None:
            return
        if exitcode:
            log.warning("%s", self._why_the_worker_process_ended(exitcode))
        await super()._on_worker_exit(exitcode)

    def _why_the_worker_process_ended(self, exitcode: int) -> str:
        """One line for the job's log. distributed says it only in a warning that the
        launcher hides without -v, so a job showed just "marked as failed because 4
        workers died" (KilledWorker) and not that they ran out of memory."""
        where = f"worker rank {self.name} on {socket.gethostname()}"
        memory = self.memory_manager
        # distributed's memory monitor stopped the process that just exited if the pid
        # it stopped last changed since the previous exit.
        last = getattr(memory, "_last_terminated_pid", -1)  # a private attribute
        stopped, self._memory_stop_seen = self._memory_stop_seen, last
        if last != stopped:
            return (
                f"{where}: its worker process went over "
                f"{memory.memory_terminate_fraction:.0%} of its memory limit "
                f"({format_bytes(memory.memory_limit or 0)}) and is restarted; a task that "
                "needs more fails with KilledWorker: give workers more memory "
                "(--mem-per-cpu, --cpus-per-task, --memory-limit) or use smaller chunks"
            )
        if exitcode == -signal.SIGKILL:
            return (
                f"{where}: its worker process was killed (SIGKILL: on a compute node most "
                "often the kernel's out-of-memory killer) and is restarted"
            )
        if exitcode < 0:
            return (
                f"{where}: its worker process died of signal {-exitcode} "
                f"({signal.strsignal(-exitcode)}) and is restarted"
            )
        return f"{where}: its worker process exited with status {exitcode} and is restarted"

    async def stop_at_job_end(self) -> None:
        # Nanny.close asks the worker to finish its running tasks first (executor_wait);
        # the job is over, so stop it without waiting, then close the nanny. A worker
        # still starting (say, restarting after its scheduler died) would make the
        # graceful way wait for it to come up: it is killed instead.
        worker = self.process
        if worker is not None and worker.process is not None:
            with contextlib.suppress(Exception):
                if worker.status.name == "running":
                    await worker.kill(
                        reason="launcher: job finished", timeout=2, executor_wait=False
                    )
                else:
                    await worker.process.kill()
        self._end_what_its_tasks_started()
        await self.close(reason="launcher: job finished", timeout=2)
