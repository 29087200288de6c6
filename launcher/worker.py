"""The worker class dask-mpi starts on worker ranks: a Dask worker that also listens to MPI.

dask-mpi stops workers only through the scheduler (``Client.shutdown()``), and a
worker that misses that message retries until the walltime (dask-mpi #58, #87). Here
the client rank's STOP message over MPI closes the worker directly, so shutdown does
not depend on the Dask comms being healthy. dask-mpi's ``execute`` passes
``worker_options`` to the class, which is how the listener gets in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from distributed import Worker
from tornado.ioloop import PeriodicCallback

STOP_POLL_MS = 50


class MPIWorker(Worker):
    """A ``distributed.Worker`` that closes itself when ``stop_check()`` returns True."""

    def __init__(self, *args, stop_check: Callable[[], bool], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stop_check = stop_check
        self._beat: asyncio.Future | None = None
        self._closing: asyncio.Task | None = None
        self.periodic_callbacks["launcher-stop"] = PeriodicCallback(self._poll_stop, STOP_POLL_MS)

    async def heartbeat(self) -> None:
        self._beat = asyncio.ensure_future(super().heartbeat())
        await self._beat

    def _poll_stop(self) -> None:
        if self.status.name in ("running", "paused") and self._stop_check():
            self.periodic_callbacks["launcher-stop"].stop()
            self._closing = asyncio.ensure_future(self._stop())

    async def _stop(self) -> None:
        # Worker.close closes the connection pool under a heartbeat still in flight,
        # which then logs a CommClosedError traceback (part of distributed #7192): let
        # the last heartbeat finish first.
        self.periodic_callbacks["heartbeat"].stop()
        if self._beat is not None and not self._beat.done():
            with contextlib.suppress(Exception):  # its own errors are logged by distributed
                await asyncio.wait_for(asyncio.shield(self._beat), timeout=2)
        # executor_wait=False: a task still running in a thread cannot be interrupted,
        # and the rank exits right after, so do not wait for it.
        await self.close(reason="launcher: job finished", executor_wait=False, timeout=5)
