"""What ends a job before its script does: signals (walltime warning SIGUSR1, scancel or
time limit SIGTERM, Ctrl-C SIGINT under mpirun), and losing the client or scheduler.

Slurm signals every task and mpirun forwards to every rank, but only the client rank can
end the job well: it interrupts the user's code (which may save a checkpoint), closes
the cluster in order and writes the summary. So every other rank only tells the client
rank over MPI and keeps serving until STOP. The client rank also sends a heartbeat over
MPI, so that when it dies (a killed process, a crashed node) the other ranks notice and
leave instead of waiting for the walltime. Deadlines on both sides make sure the job
ends within seconds even if the user's code ignores the interrupt.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from launcher.comm import ALIVE, FAILED, INTERRUPT, PatientComm

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
HEARTBEAT_SECONDS = 2.0
#: Without a heartbeat from the client rank for this long, the other ranks leave.
CLIENT_LOST_SECONDS = 20.0
#: The scheduler unreachable for this long interrupts the user's code.
SCHEDULER_LOST_SECONDS = 5.0

log = logging.getLogger("launcher")
_held: list[int] = []


def hold_signals() -> None:
    """From the start of a rank until its watch is installed, keep a signal instead of
    dying of it (SIGTERM's and SIGUSR1's default action), which would end the step as
    a crash of one task, with no summary and no say for the user's code.

    Slurm sends the walltime warning at its first periodic check once the warning is
    due, up to 30 s early: with a short time limit that can be while the ranks start
    (0-30 s after the start of a 1-minute test job with ``--signal=USR1@50``). scancel
    can come at any time. The watch gets the held signal (``take_over_signals``)."""
    for signum in SIGNALS:
        signal.signal(signum, _hold)


def _hold(signum: int, frame: object) -> None:
    _held.append(signum)


def python_signal_defaults() -> None:
    """In a process forked from a rank once its watch is in place (a
    ``multiprocessing.Pool`` of the script or of a task), or from the fork server:
    Python's own signal handling. With the watch's handler, a pool worker that
    ``pool.terminate()`` sends SIGTERM (as leaving a ``with Pool()`` block does) said
    the job was ending, raised Interrupted with a traceback, and a worker rank's would
    have sent MPI messages from the child; deaf like the fork server, it did not end,
    and ``terminate()`` waited for it forever. The launcher's own helper processes are
    forked before the watch, deaf to these signals, and a nanny's worker process
    makes itself deaf to them (launcher/worker.py)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)  # the client rank's, which would take a child's Ctrl-C as its own


def take_over_signals(handler: Callable[[int, object], None]) -> None:
    """Install a watch's handler (once per process), and deliver to it the first signal
    held during start-up, if any."""
    for signum in SIGNALS:
        signal.signal(signum, handler)
    os.register_at_fork(after_in_child=python_signal_defaults)
    if _held:
        signum = _held[0]
        _held.clear()
        signal.raise_signal(signum)


class Interrupted(KeyboardInterrupt):
    """Raised in your script when the job must end before the script does: the
    walltime warning (SIGUSR1), scancel or the time limit (SIGTERM), Ctrl-C.

    Catch it to save a checkpoint; the job ends ``interrupt-grace`` seconds later at the
    latest (default 5), with status "interrupted" and exit status 128 + the signal.
    Like KeyboardInterrupt it is not an ``Exception``, so ``except Exception`` clauses
    do not swallow it.
    """

    status = "interrupted"

    def __init__(self, reason: str, signum: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell's convention for "ended by a signal"."""
        return 128 + self.signum if self.signum else 1


class ClusterLost(Interrupted):
    """Raised in your script when the Dask scheduler is gone (its rank was killed, or
    crashed) or every worker is: nothing it computes can finish, so the job ends with
    status "failed"."""

    status = "failed"


for _public in (Interrupted, ClusterLost):
    _public.__module__ = "launcher"  # their public names, as users import and catch them


def signal_reason(signum: int, rank: int) -> str:
    return f"{signal.Signals(signum).name} received on rank {rank}"


class ClientWatch:
    """On the client rank: turns a signal here, a report from another rank, or a lost
    scheduler into an exception in the main thread, tells the other ranks it is alive,
    and ends the job if the user's code does not stop within the grace period."""

    def __init__(
        self,
        comm: PatientComm,
        grace: float,
        on_overdue: Callable[[], None],
        health: Callable[[], str | None],
    ) -> None:
        self.comm = comm
        self.grace = grace
        self.on_overdue = on_overdue
        self.health = health
        self.cause: Interrupted | None = None
        #: What each rank that reported a failure said (the last report of each).
        self.failures: dict[int, str] = {}
        self._said: set[str] = set()
        self._said_lock = threading.Lock()
        self.raising = False  # raise in the main thread only while user code may run
        self.ending = False  # the main thread is closing the job: no emergency needed
        self._to_raise: Interrupted | None = None
        self._done = threading.Event()
        self._wakeup = -1  # the read end of Python's signal wakeup fd, from install()
        self._unhandled: int | None = None  # a signal received, its handler not yet run
        self._watch = threading.Thread(target=self._watch, name="launcher-watch", daemon=True)

    def install(self) -> None:
        self._wakeup, write_end = os.pipe()
        os.set_blocking(self._wakeup, False)
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        take_over_signals(self._on_signal)
        self._watch.start()

    def stop_watching(self) -> None:
        self._done.set()
        self._watch.join(2.0)

    def _on_signal(self, signum: int, frame: object) -> None:
        forwarded, self._to_raise = self._to_raise, None
        cause = forwarded or Interrupted(signal_reason(signum, self.comm.rank), signum)
        if forwarded is None and self.cause is not None:
            return  # the job is already ending
        if self.cause is None:
            self._begin(cause)
        if self.raising:
            raise cause

    def _begin(self, cause: Interrupted) -> None:
        self.cause = cause
        log.warning("%s; ending the job", cause.reason)
        timer = threading.Timer(self.grace, self._overdue)
        timer.daemon = True
        timer.start()

    def _raise_in_main_thread(self, cause: Interrupted) -> None:
        """Only the main thread can raise in the user's code: run our handler there.

        The grace period starts here, not in that handler: Python runs a signal handler
        only when the main thread returns to Python, and a script blocked in C (say,
        ``MPI.COMM_WORLD.Barrier()``, which no other rank joins) never did, so the job
        did not end until the other ranks gave up on it (16 s after a SIGTERM)."""
        if self.cause is None:
            self._to_raise = cause
            self._begin(cause)
            # A signal, not _thread.interrupt_main(), which only sets a flag: a main
            # thread blocked in a wait (distributed's sync() waits in 10-s steps, as in
            # client.gather) saw it up to 10 s late; a signal interrupts the wait.
            main = threading.main_thread().ident
            assert main is not None
            signal.pthread_kill(main, signal.SIGINT)

    def report_failure(self, rank: int, message: str) -> None:
        self.failures[rank] = message
        self.say_once(message)

    def say_once(self, message: str) -> None:
        """A line for the job log, unless it is there already: the worker ranks of a node
        that cannot start fail alike, and their reports reach this watch's thread and the
        main thread, whichever polls first."""
        with self._said_lock:
            if message in self._said:
                return
            self._said.add(message)
        log.warning("%s", message)

    def _held_signal(self) -> int | None:
        """A signal of ours that the process received, whose handler has not run.

        Python runs a handler in the main thread, between two bytecodes or when a
        blocking call there returns EINTR. A signal that came after the script's last
        bytecode before a blocking call (``print("BUSY"); time.sleep(120)``) and before
        the call entered the kernel, or that the kernel gave to another thread, does
        neither: the job ran on through the whole sleep (seen once in CI). Python's
        wakeup fd tells this thread of every signal it received; one whose handler has
        not begun the job's end by this thread's next poll is raised as a forwarded one
        is, by a signal the main thread's call cannot miss."""
        try:
            received = os.read(self._wakeup, 64)
        except BlockingIOError:
            received = b""
        unhandled = self._unhandled if self.cause is None else None
        self._unhandled = next(
            (s for s in received if s in SIGNALS and signal.getsignal(s) == self._on_signal),
            None,
        )
        return unhandled

    def _overdue(self) -> None:
        if not self.ending:
            self.on_overdue()

    def _watch(self) -> None:
        others = [r for r in range(self.comm.size) if r != self.comm.rank]
        next_beat = next_check = 0.0
        unhealthy_since: float | None = None
        while not self._done.wait(0.05):
            now = time.monotonic()
            if now >= next_beat:
                for rank in others:
                    self.comm.send(None, rank, ALIVE)
                next_beat = now + HEARTBEAT_SECONDS
            report = self.comm.poll(INTERRUPT)
            if report is not None:
                source, signum = report
                self._raise_in_main_thread(Interrupted(signal_reason(signum, source), signum))
            held = self._held_signal()
            if held is not None:
                self._raise_in_main_thread(Interrupted(signal_reason(held, self.comm.rank), held))
            failed = self.comm.poll(FAILED)
            if failed is not None:
                self.report_failure(*failed)
            if now >= next_check:
                next_check = now + 1.0
                problem = self.health()
                if problem is None:
                    unhealthy_since = None
                elif unhealthy_since is None:
                    unhealthy_since = now
                elif now - unhealthy_since >= SCHEDULER_LOST_SECONDS:
                    self._raise_in_main_thread(ClusterLost(problem))


class ServingWatch:
    """On every other rank: report the first signal to the client rank and keep
    serving; notice when the client rank stops sending its heartbeat."""

    def __init__(self, comm: PatientComm, client_rank: int, patience: float) -> None:
        self.comm = comm
        self.client_rank = client_rank
        self.patience = patience
        self.signum: int | None = None
        self._signalled_at: float | None = None
        self._heard_at = time.monotonic()

    def install(self) -> None:
        take_over_signals(self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            self._signalled_at = time.monotonic()
            self.comm.send(signum, self.client_rank, INTERRUPT)

    def reason_to_leave(self) -> tuple[int, str] | None:
        """(exit status, why) once waiting for the client rank is pointless."""
        now = time.monotonic()
        while self.comm.poll(ALIVE, source=self.client_rank) is not None:
            self._heard_at = now
        if self._signalled_at is not None and now - self._signalled_at > self.patience:
            assert self.signum is not None
            return 128 + self.signum, (
                f"rank {self.comm.rank}: the client rank did not end the job within "
                f"{self.patience:.0f} s of {signal.Signals(self.signum).name}"
            )
        if now - self._heard_at > CLIENT_LOST_SECONDS:
            return 1, (
                f"the client rank {self.client_rank} stopped answering (killed, or its "
                f"node failed); rank {self.comm.rank} gave up after {CLIENT_LOST_SECONDS:.0f} s"
            )
        return None
