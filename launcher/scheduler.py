"""The Dask scheduler, served from a background thread of its rank.

dask-mpi runs the scheduler in the rank's main thread and, on the client rank, the
user's code in a side thread (``execute``), or relies on an ``atexit`` hook that calls
``sys.exit`` (``initialize``). Here the main thread stays free: for the user's code
(signals, ``if __name__ == "__main__"`` and libraries that want the main thread work as
under plain ``python``), or to listen for the job's end. Keeping the ``Scheduler``
object also lets the launcher close it last and quietly, after the workers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from concurrent.futures import Future
from typing import Any

from distributed import Scheduler
from distributed.core import ErrorMessage, Status, error_message

from launcher.dashboard import DashboardOnFirstVisit
from launcher.plan import Plan

log = logging.getLogger("launcher")


class SchedulerService:
    """Start with ``start()``; ``stop()`` closes the scheduler (and a co-hosted worker)."""

    def __init__(self, plan: Plan, worker_options: dict[str, Any] | None = None) -> None:
        self.plan = plan
        self.worker_options = worker_options  # single-process mode: a worker in this loop
        self.scheduler: Scheduler | None = None
        self._ready: Future[str] = Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="launcher-scheduler", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> str:
        """The scheduler's address once it listens; raises what stopped it from starting."""
        self._thread.start()
        try:
            return self._ready.result(timeout=self.plan.startup_timeout)
        except OSError as err:  # which of its addresses, distributed does not say
            plan = self.plan
            where = (
                f"interface {plan.interface or 'not set'}, dashboard address "
                f"{plan.dashboard_address if plan.dashboard else 'none'}"
            )
            raise OSError(
                err.errno, f"{err.strerror} ({where}); check --interface and --dashboard-address"
            ) from err

    def stop(self, timeout: float) -> bool:
        """Close and wait up to ``timeout``; False if the thread is still running."""
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # reported to the main thread, never lost
            self.error = err
            if not self._ready.done():
                self._ready.set_exception(err)

    def _make_scheduler(self) -> Scheduler:
        """The scheduler; a taken dashboard port is said in one line, not a warning."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # The HTTP server (and so the dashboard's port) starts now; the dashboard's
            # pages come on the first visit (launcher/dashboard.py). distributed starts that
            # server even without a dashboard (for /health and /metrics): then on any
            # free port, so that --no-dashboard never competes for the dashboard's.
            scheduler = JobScheduler(
                interface=self.plan.interface,
                port=0,
                dashboard=False,
                dashboard_address=self.plan.dashboard_address if self.plan.dashboard else ":0",
            )
        for warning in caught:
            if "already in use" in str(warning.message) and scheduler.http_server:
                log.warning(
                    "dashboard address %s is taken; serving the dashboard on port %d instead",
                    self.plan.dashboard_address,
                    scheduler.http_server.port,
                )
            else:
                warnings.warn_explicit(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        return scheduler

    async def _serve(self) -> None:
        from distributed.utils import import_term

        from launcher.serving import worker_class

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        plan = self.plan
        async with self._make_scheduler() as scheduler:
            self.scheduler = scheduler
            if not plan.verbose:
                quiet = QuietCancellationsOnClose(scheduler)
                for handler in logging.getLogger("distributed").handlers:
                    handler.addFilter(quiet)
            if not plan.nanny:
                refuse_restarts(scheduler)
            if plan.dashboard:
                DashboardOnFirstVisit(scheduler).install()
            if self.worker_options is None:
                self._ready.set_result(scheduler.address)
                await self._stop.wait()
            else:
                worker = import_term(worker_class(plan))
                async with worker(scheduler_ip=scheduler.address, **self.worker_options):
                    self._ready.set_result(scheduler.address)
                    await self._stop.wait()
            await scheduler.close(reason="launcher: job finished")


class JobScheduler(Scheduler):
    """distributed's scheduler, which lets workers and clients go without per-task work
    once the job is over (``launcher_job_over``, which the client rank calls before it
    stops the workers and closes the clients).

    A worker leaving makes distributed's scheduler recompute the results it held that a
    client still wants, on the workers not yet gone, and a client leaving makes it
    release each of its keys: about 60 us a task on this machine, in the scheduler's
    thread. A script that ended holding its futures (``futures = client.map(f, items)``
    at its top level, a persisted array) kept the scheduler busy for seconds after it:
    with 50,000 futures the nannies' closing messages waited, the ranks passed the
    shutdown timeout and the job that had succeeded failed; held scattered data ended
    the log with an ERROR "caused the cluster to lose scattered data". (A LocalCluster
    pays the same at exit: 1.2 s to close a client with 20,000 futures.) Once the job
    is over nobody asks for those results, so they are left as they are.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_over = False
        self.handlers["launcher_job_over"] = self.launcher_job_over

    def launcher_job_over(self) -> None:
        self.job_over = True

    async def remove_worker(  # type: ignore[override]
        self, address: str, *, stimulus_id: str, expected: bool = False, close: bool = True
    ) -> str:
        if not self.job_over:
            return await super().remove_worker(
                address, stimulus_id=stimulus_id, expected=expected, close=close
            )
        # Without its stream the scheduler sends it nothing more (send_all skips it)
        # and does not remove it again when the stream ends (handle_worker). The worker
        # closes by itself: its rank was told to.
        if self.stream_comms.pop(address, None) is None:
            return "already-removed"
        return "OK"

    def remove_client(self, client: str, stimulus_id: str | None = None) -> None:
        if not self.job_over:
            super().remove_client(client, stimulus_id)
        else:
            self.clients.pop(client, None)


class QuietCancellationsOnClose(logging.Filter):
    """No tracebacks for the requests the scheduler drops when the job ends.

    Closing the scheduler cancels every handler still waiting: a script's
    ``distributed.progress(...)`` bar (its ``feed`` notices the closed bar only at its
    next write, 100 ms later, and the launcher closes sooner), a task still in
    ``Event.wait()`` or ``Semaphore.acquire()``. ``log_errors`` (distributed) logs each
    such CancelledError as an ERROR with a 10-line traceback, after the job's result;
    a LocalCluster prints them too. Errors of a running scheduler still show.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__()
        self.scheduler = scheduler

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.exc_info
            and isinstance(record.exc_info[1], asyncio.CancelledError)
            and self.scheduler.status in (Status.closing, Status.closed)
        )


def refuse_restarts(scheduler: Scheduler) -> None:
    """Without nannies (``--no-nanny``) ``client.restart()`` fails at once, saying why.

    distributed shuts down every worker without a nanny and then waits for "an external
    deployment system" to start new ones (``Scheduler.restart_workers``). Here nothing
    would: the call waited 120 s and left the job with no workers, and the one log line
    that said why is hidden without ``-v``. (``client.restart_workers`` already refuses
    workers without a nanny; distributed #7242, which would refuse them in ``restart``
    too, was never merged.) The error is returned, not raised, so that the scheduler
    does not also log it with a traceback.
    """

    async def refuse(**kwargs: Any) -> ErrorMessage:
        return error_message(
            RuntimeError(
                "client.restart() needs a nanny per worker to start it again, and this "
                "job runs with --no-nanny, where the scheduler would remove every worker "
                "for good; run without --no-nanny to restart workers"
            ),
            status="uncaught-error",  # what the client raises, as for a raised error
        )

    scheduler.handlers["restart"] = refuse
