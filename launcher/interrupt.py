"""The job being told to end: walltime warning (SIGUSR1), scancel or time limit (SIGTERM),
Ctrl-C under mpirun (SIGINT).

Slurm signals every task, mpirun forwards to every rank, but only the client rank can
end the job well: it interrupts the user's code (which may save a checkpoint), closes
the cluster in order and writes the summary. So every other rank only tells the client
rank over MPI and keeps serving until STOP. Deadlines on both sides make sure the job
ends within seconds even if the user's code ignores the interrupt or the client rank
is gone.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from launcher.comm import FAILED, INTERRUPT, PatientComm

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

log = logging.getLogger("launcher")


class Interrupted(KeyboardInterrupt):
    """Raised in your script when the job is told to end (walltime warning, scancel).

    Catch it to save a checkpoint; the job ends ``interrupt-grace`` seconds later at
    the latest (default 5), with status "interrupted" and a non-zero exit status.
    Like KeyboardInterrupt, it is not an ``Exception``, so ``except Exception``
    clauses do not swallow it.
    """

    def __init__(self, signum: int, where: str) -> None:
        self.signum = signum
        self.where = where
        super().__init__(f"{signal.Signals(signum).name} received ({where})")


Interrupted.__module__ = "launcher"  # its public name, as users import and catch it


def exit_status_for(signum: int) -> int:
    """The shell's convention for "ended by a signal"."""
    return 128 + signum


class ClientInterrupts:
    """On the client rank: turns a signal here, or a report from another rank, into
    ``Interrupted`` in the main thread, and ends the job if the user's code does not."""

    def __init__(self, comm: PatientComm, grace: float, on_overdue: Callable[[], None]) -> None:
        self.comm = comm
        self.grace = grace
        self.on_overdue = on_overdue
        self.signum: int | None = None
        self.where = ""
        self.raising = False  # raise in the main thread only while user code may run
        self.ending = False  # the main thread is closing the job: no emergency needed
        self._forwarded_by: int | None = None
        self._done = threading.Event()
        self._watch = threading.Thread(target=self._watch_ranks, name="launcher-watch", daemon=True)

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)
        self._watch.start()

    def stop_watching(self) -> None:
        self._done.set()
        self._watch.join(2.0)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            return
        source = self.comm.rank if self._forwarded_by is None else self._forwarded_by
        self.signum, self.where = signum, f"on rank {source}"
        log.warning("%s received %s; ending the job", signal.Signals(signum).name, self.where)
        timer = threading.Timer(self.grace, self._overdue)
        timer.daemon = True
        timer.start()
        if self.raising:
            raise Interrupted(signum, self.where)

    def _overdue(self) -> None:
        if not self.ending:
            self.on_overdue()

    def _watch_ranks(self) -> None:
        """Reports from other ranks arrive over MPI; a signal makes the main thread act."""
        main = threading.main_thread().ident
        while not self._done.wait(0.05):
            report = self.comm.poll(INTERRUPT)
            if report is not None and self.signum is None:
                self._forwarded_by, signum = report
                # The handler must run in the main thread to raise in the user's code.
                signal.pthread_kill(main, signum)
            failed = self.comm.poll(FAILED)
            if failed is not None:
                log.warning("%s", failed[1])


class RankInterrupts:
    """On every other rank: report the first signal to the client rank and keep serving;
    give up waiting for the client rank after ``deadline`` seconds."""

    def __init__(self, comm: PatientComm, client_rank: int, deadline: float) -> None:
        self.comm = comm
        self.client_rank = client_rank
        self.deadline = deadline
        self.signum: int | None = None
        self.expires: float | None = None

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            self.expires = time.monotonic() + self.deadline
            self.comm.send(signum, self.client_rank, INTERRUPT)

    def overdue(self) -> bool:
        """True once the client rank had its chance to end the job and did not."""
        return self.expires is not None and time.monotonic() > self.expires
