"""The job's standard input, for a script that runs on a rank other than 0.

MPI launchers give their standard input to rank 0 (srun copies it to every task), and
the dedicated layout runs the script on rank 1. There a script reading ``sys.stdin``
got nothing under Open MPI (``/dev/null``: what was piped into mpirun was lost), and
under MPICH's and Intel MPI's hydra a pipe that is never written to nor closed: it
waited until the walltime (measured: ``echo hello | mpirun -n 4 python -m launcher
--layout dedicated script.py`` hung, also with ``</dev/null``). dask-mpi's client is
rank 1 too, and has the same problem.

Rank 0 runs the scheduler there: it reads its standard input when the client rank asks
(``StdinSource``, a scheduler handler), and the client rank feeds what it gets into a
pipe that becomes its file descriptor 0 (``forward_stdin``), for the script and for the
programs it starts. Reading only when asked keeps the data where it is until the script
wants it (one chunk ahead, plus what the pipe holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading

from distributed.core import rpc
from distributed.security import Security

CHUNK = 1 << 16


class StdinSource:
    """This process's standard input, a chunk per call of the scheduler's handler
    ``launcher_stdin`` (b"" at its end).

    The reads happen in a daemon thread: one that waits for a terminal (an interactive
    mpirun whose user types nothing) must hold neither the scheduler's event loop nor
    the end of the job, which a thread of asyncio's executor would (it is joined).
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = (
            queue.SimpleQueue()
        )
        self._reader: threading.Thread | None = None

    async def read(self) -> bytes:
        if self._reader is None:
            self._reader = threading.Thread(target=self._serve, name="launcher-stdin", daemon=True)
            self._reader.start()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()
        self._requests.put((loop, answer))
        return await answer

    def _serve(self) -> None:
        while True:
            loop, answer = self._requests.get()
            try:
                data = os.read(0, CHUNK)
            except OSError:  # no standard input at all (closed): as its end
                data = b""
            with contextlib.suppress(RuntimeError):  # the loop is closed: the job is over
                loop.call_soon_threadsafe(_answer, answer, data)


def _answer(answer: asyncio.Future[bytes], data: bytes) -> None:
    if not answer.done():  # not cancelled as the scheduler closed
        answer.set_result(data)


def forward_stdin(scheduler_address: str) -> None:
    """Make this process's standard input a pipe fed from rank 0's, through the
    scheduler at ``scheduler_address``; call before the script starts."""
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)
    feeder = _Feeder(write_end)
    os.register_at_fork(
        before=feeder.lock.acquire,
        after_in_parent=feeder.lock.release,
        after_in_child=feeder.forked,
    )
    threading.Thread(
        target=feeder.feed, args=(scheduler_address,), name="launcher-stdin", daemon=True
    ).start()


class _Feeder:
    """The pipe's writing end, which a process the script forks (a ``fork`` Pool made
    before the input ended) must not keep: the script would never read its end."""

    def __init__(self, write_end: int) -> None:
        self.write_end = write_end
        self.closed = False
        self.lock = threading.Lock()  # a fork copies the end open or closed, not between

    def feed(self, scheduler_address: str) -> None:
        try:
            asyncio.run(_pump(scheduler_address, self.write_end))
        except OSError:
            # The scheduler is gone: the job is over, or ends now that the client
            # cannot reach it (ClientRank.health), which interrupts a script waiting
            # for input. Its input is not ended: what it read may not be all there was.
            # Or the script closed its standard input (BrokenPipeError): nothing to tell.
            return
        with self.lock:  # the end of rank 0's input is the end of the script's
            os.close(self.write_end)
            self.closed = True

    def forked(self) -> None:
        self.lock.release()
        if not self.closed:  # once: the number may be another file's in a grandchild
            os.close(self.write_end)
            self.closed = True


async def _pump(scheduler_address: str, write_end: int) -> None:
    connection_args = Security().get_connection_args("client")
    async with rpc(scheduler_address, connection_args=connection_args) as scheduler:
        while data := await scheduler.launcher_stdin():
            view = memoryview(data)
            while view:  # blocks while the pipe is full: the script reads at its pace
                view = view[os.write(write_end, view) :]
