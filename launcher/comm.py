"""MPI between the ranks of one launcher job: patient collectives and control messages.

Two fixes over calling mpi4py the way dask-mpi does:

* Blocking MPI calls busy-poll. While rank 0 imports distributed and starts the
  scheduler, dask-mpi's waiting ``bcast``/``Barrier`` on every other rank spin a CPU
  each, which on an oversubscribed node (or a login-node test) slows rank 0 down.
  ``PatientComm`` offers the same ``bcast``/``Barrier`` API (so dask-mpi's
  ``execute`` can use it as its ``comm``) but waits on a non-blocking barrier with
  sleeps, and gives up at a deadline instead of waiting for the walltime.
* One thread at a time in MPI. The client rank's watch thread sends heartbeats and
  probes while its main thread waits for workers, and a worker's stop watch probes
  from the event loop's thread. MPI_THREAD_MULTIPLE allows that, but Open MPI 4.1's
  TCP transport connects two processes on their first message, and two threads in MPI
  then race (open-mpi/ompi#3035; tools/mpi_thread_race.py shows it), the likely cause
  of a rank 0 that crashed with SIGSEGV after "failed to TCP connect to a peer" in a
  three-node job. A lock around every call this module makes takes the launcher's
  MPI calls in turns.
* The job's outcome travels over MPI, not over the Dask comms that may be broken:
  the client rank sends STOP with the exit status and, while it lives, ALIVE; other
  ranks report READY once their worker has joined the scheduler, FAILED, DONE, or
  INTERRUPT when a signal reaches them.
  A private duplicate communicator keeps these apart from any MPI the user code does.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

STOP, FAILED, DONE, INTERRUPT, ALIVE, READY = 11, 12, 13, 14, 15, 16


class StartupAborted(RuntimeError):
    """The root of a collective announced that startup failed; ``str()`` says why."""


class MPITimeout(TimeoutError):
    """Other ranks did not reach a collective before the deadline."""


@dataclass(frozen=True)
class Aborted:
    """Broadcast in place of the scheduler address when the scheduler cannot start."""

    reason: str


class SoloComm:
    """A world of one process, for running without any MPI library."""

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def Dup(self) -> SoloComm:
        return self

    def Ibarrier(self) -> _Done:
        return _Done()

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather(self, obj: Any, root: int = 0) -> list[Any]:
        return [obj]

    def iprobe(self, source: int = -1, tag: int = -1) -> bool:
        return False

    def Abort(self, errorcode: int = 1) -> None:
        os._exit(errorcode)


class _Done:
    def Test(self) -> bool:
        return True


def _sleep_backoff(waited: float) -> None:
    # Answer fast at first (collectives usually complete within milliseconds), then
    # settle at 20 ms: negligible CPU and negligible latency next to Dask's own.
    time.sleep(0.001 if waited < 0.01 else 0.005 if waited < 0.2 else 0.02)


class PatientComm:
    """A communicator whose waits sleep and end at a deadline."""

    def __init__(self, comm: Any, timeout: float = 30.0) -> None:
        self.comm = comm.Dup()
        self.rank: int = self.comm.Get_rank()
        self.size: int = self.comm.Get_size()
        self.timeout = timeout
        self._pending: list[Any] = []
        # Reentrant: a Python signal handler that sends (ServingWatch) can run in the
        # main thread between two bytecodes of a call that holds it.
        self._mpi = threading.RLock()

    # --- the API dask-mpi's execute() uses -------------------------------------

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size

    def Barrier(self) -> None:
        self.meet("barrier")

    def bcast(self, obj: Any = None, root: int = 0) -> Any:
        """Broadcast that waits patiently; raises StartupAborted if root sends Aborted."""
        self.Barrier()
        with self._mpi:
            value = self.comm.bcast(obj, root=root)
        if isinstance(value, Aborted) and self.rank != root:
            raise StartupAborted(value.reason)
        return value

    # --- collectives and messages for the launcher itself ---------------------

    def meet(self, what: str, timeout: float | None = None) -> None:
        """A barrier that sleeps while it waits and gives up after ``timeout`` seconds."""
        with self._mpi:
            request = self.comm.Ibarrier()
        limit = self.timeout if timeout is None else timeout
        start = time.monotonic()
        while not self._test(request):
            waited = time.monotonic() - start
            if waited > limit:
                raise MPITimeout(f"other ranks did not reach the {what} within {limit:.0f} s")
            _sleep_backoff(waited)

    def gather(self, obj: Any, root: int = 0) -> list[Any] | None:
        self.Barrier()
        with self._mpi:
            return self.comm.gather(obj, root=root)

    def send(self, obj: Any, dest: int, tag: int) -> None:
        """Send without waiting for the receiver (it may be busy for hours)."""
        with self._mpi:
            if len(self._pending) > 256:  # heartbeats accumulate over a long job
                self._pending = [r for r in self._pending if not r.Test()]
            self._pending.append(self.comm.isend(obj, dest=dest, tag=tag))

    def poll(self, tag: int, source: int | None = None) -> tuple[int, Any] | None:
        """A waiting message with this tag as (source, payload), or None."""
        if self.size == 1:
            return None
        from mpi4py import MPI

        status = MPI.Status()
        src = MPI.ANY_SOURCE if source is None else source
        with self._mpi:
            if not self.comm.iprobe(source=src, tag=tag, status=status):
                return None
            sender = status.Get_source()
            return sender, self.comm.recv(source=sender, tag=tag)

    def flush(self, timeout: float = 2.0) -> None:
        """Give sent messages a moment to leave before this process exits."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            with self._mpi:
                self._pending = [r for r in self._pending if not r.Test()]
            if self._pending:
                time.sleep(0.005)

    def _test(self, request: Any) -> bool:
        with self._mpi:
            return bool(request.Test())

    def abort(self, code: int) -> None:
        self.comm.Abort(code)
