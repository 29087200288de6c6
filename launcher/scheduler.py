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
import time
import warnings
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from dask.utils import format_time
from distributed import Scheduler
from distributed.core import ErrorMessage, Status, error_message
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol import pickle
from tornado.ioloop import PeriodicCallback

from launcher.config import dask_export
from launcher.dashboard import DashboardOnFirstVisit
from launcher.plan import Plan
from launcher.stdin import StdinSource

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
                expected_workers=len(self.plan.workers),
                shutdown_timeout=self.plan.shutdown_timeout,
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
                async with worker(scheduler_ip=scheduler.address, **self.worker_options) as w:
                    self._ready.set_result(scheduler.address)
                    await self._stop.wait()
                    # Stopped as on a worker rank, not waiting for running tasks: left to
                    # its close, a task still running (the job interrupted by a signal,
                    # a script that raised) held the job past its shutdown timeout, and
                    # the job that had been interrupted ended in MPI_Abort as failed.
                    await w.stop_at_job_end()
            await scheduler.close(reason="launcher: job finished")


class JobScheduler(Scheduler):
    """distributed's scheduler for a cluster whose workers are all there from the start
    and no others come: a task that none of them can run fails at once, and workers and
    clients go without per-task work once the job is over.

    A task whose restrictions (``resources=``, ``workers=``) no worker meets waits in
    distributed's no-worker state for a matching worker to join, as one may in an
    adaptive cluster (distributed #8256; its ``no-workers-timeout``, off by default,
    would also fail tasks while every worker is paused for memory, a wait that ends by
    itself). In a job none joins: a ``resources={"GPU": 1}`` left from a dask-jobqueue
    script kept the job waiting until its walltime. Once every worker of the job has
    registered (a worker restarted by its nanny is waited for), such a task fails with
    ``NoWorkerInThisJob``, which says what it asked for and what the workers have.

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

    def __init__(
        self, *args: Any, expected_workers: int, shutdown_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.expected_workers = expected_workers
        self.shutdown_timeout = shutdown_timeout
        self.job_over = False
        self._idle_close_said = False
        self.handlers["launcher_job_over"] = self.launcher_job_over
        self.handlers["launcher_stdin"] = StdinSource().read
        self.handlers["launcher_may_restart_paused"] = self.launcher_may_restart_paused
        self.periodic_callbacks["launcher-unrunnable"] = PeriodicCallback(
            self.fail_what_no_worker_can_run, 500
        )

    def fail_what_no_worker_can_run(self) -> None:
        if not self.unrunnable or len(self.workers) < self.expected_workers:
            return
        job_workers = [(ws.address, ws.host, ws.resources) for ws in self.workers.values()]
        stimulus_id = f"launcher-no-worker-in-job-{time.time()}"
        recommendations: dict[Any, str] = {}
        # Once per kind of restriction: the tasks of one group share theirs, and while
        # every worker is paused thousands of runnable tasks wait here.
        verdicts: dict[tuple[frozenset[Any], ...], str | None] = {}
        for ts in list(self.unrunnable):
            hosts = frozenset(self.coerce_hostname(h) for h in ts.host_restrictions or ())
            resources = ts.resource_restrictions or {}
            kind = (frozenset(ts.worker_restrictions or ()), hosts, frozenset(resources.items()))
            if kind not in verdicts:
                verdicts[kind] = why_no_worker_can_run(kind[0], hosts, resources, job_workers)
            if (why := verdicts[kind]) is None:
                continue
            message = (
                f"task {ts.key!r} can run on no worker of this job, and no more workers "
                f"will come: {why}"
            )
            recommendations.update(
                self.transition(
                    ts.key,
                    "erred",
                    exception=pickle.dumps(NoWorkerInThisJob(message)),
                    exception_text=message,
                    cause=ts.key,
                    stimulus_id=stimulus_id,
                )
            )
        self.transitions(recommendations, stimulus_id)

    def check_idle(self) -> float | None:
        """distributed's, saying it when it closes the scheduler. With
        ``distributed.scheduler.idle-timeout`` set (in a Dask config kept from
        interactive clusters), the scheduler closed after that long without work, and
        the job ended in ClusterLost as if the scheduler's rank had been killed: the
        reason was an INFO line that the job's log leaves out without -v."""
        idle_since = super().check_idle()
        over = self.idle_timeout and idle_since and time.time() > idle_since + self.idle_timeout
        if over and not self._idle_close_said:
            self._idle_close_said = True
            log.warning(
                "the scheduler closes after %s without work, as "
                "distributed.scheduler.idle-timeout in your Dask config says, and the job "
                "ends with it: drop that setting where your script waits between "
                "computations",
                format_time(self.idle_timeout),
            )
        return idle_since

    async def launcher_job_over(self) -> None:
        """The user's code has ended: the workers go next (their ranks are told to),
        then this scheduler.

        distributed's ``Scheduler.close`` first runs its plugins' ``before_close`` and
        ``close``, while its workers are still there, and plugins rely on that:
        ``PipInstall``/``CondaInstall`` with ``restart_workers=True`` unregister their
        plugin from every nanny, ``ClusterDump`` collects every worker's state. Run when
        the launcher closed the scheduler, after its workers, those calls waited for
        nannies that were gone (distributed retries a refused connection for its 30-s
        connect timeout): the scheduler's rank passed the shutdown timeout, and a job
        whose script had succeeded failed with MPI_Abort, its cluster dump empty. So
        they run now, in distributed's order, bounded by the shutdown timeout, and leave
        the scheduler, whose close then finds none to close."""
        self.job_over = True
        plugins = dict(self.plugins)
        waiting: set[str] = set()
        closing = asyncio.ensure_future(_close_plugins(plugins, waiting))
        await asyncio.wait([closing], timeout=self.shutdown_timeout)
        if not closing.done():
            closing.cancel()
            log.warning(
                "scheduler plugin(s) %s did not close within the shutdown timeout (%g s); "
                "the job ends without waiting for them",
                ", ".join(sorted(waiting)),
                self.shutdown_timeout,
            )
        for name in plugins:
            self.plugins.pop(name, None)

    def launcher_may_restart_paused(self, worker: str) -> bool:
        """Whether a worker paused for memory Dask cannot free may restart now
        (``LauncherWorker._check_paused``), its queued tasks handed back first.

        Restarting, it hands its data to a running worker (``_close_handing_over``).
        Where none runs, as when every worker leaks alike, its data is lost and its
        tasks run again: one worker at a time, the one holding the least, and only
        while every worker of the job is registered (none is restarting), so that the
        rest can hand theirs to it once it is back. The tasks waiting in its queue go
        back to the scheduler as not run there: closing with them, it would count them
        as suspects, as for a crash, and a task on such workers four times failed with
        KilledWorker though none had run it."""
        ws = self.workers.get(worker)
        if ws is None or self.job_over:
            return False
        others = [w for w in self.workers.values() if w is not ws]
        if not any(w.status == Status.running for w in others):
            paused = [w for w in self.workers.values() if w.status == Status.paused]
            least = min(paused, key=lambda w: (w.nbytes, w.address), default=None)
            if len(self.workers) < self.expected_workers or least is not ws:
                return False
        stimulus_id = f"launcher-restart-paused-{time.time()}"
        # distributed's own way back for a task its worker gave up (a Reschedule, work
        # stealing); private: Scheduler._reschedule.
        for ts in list(ws.processing):
            self._reschedule(ts.key, worker, stimulus_id=stimulus_id)
        return True

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


async def _close_plugins(plugins: Mapping[str, SchedulerPlugin], waiting: set[str]) -> None:
    """What ``Scheduler.close`` does with its plugins; ``waiting`` holds the names of
    those whose hook has not returned yet."""

    async def call(name: str, hook: Callable[[], Awaitable[None]]) -> None:
        try:
            await hook()
        except Exception:  # as distributed does: the others still close
            logging.getLogger("distributed.scheduler").exception(
                "Plugin call failed during scheduler.close"
            )
        finally:
            waiting.discard(name)

    for hook in ("before_close", "close"):
        waiting.update(plugins)
        await asyncio.gather(*(call(name, getattr(p, hook)) for name, p in plugins.items()))


class NoWorkerInThisJob(Exception):
    """What a task that no worker of the job can run fails with (see JobScheduler)."""


def why_no_worker_can_run(
    workers_named: Collection[str],
    hosts_named: Collection[str],
    resources: Mapping[str, float],
    job_workers: Sequence[tuple[str, str, Mapping[str, float]]],
) -> str | None:
    """Why no worker of the job meets a task's restrictions, with what to do; None if one
    does. ``job_workers`` holds each worker's address, host and resources; a task limited
    to workers and hosts may run on any of them (distributed's union), and needs all of
    its resources there."""
    placed = {
        address
        for address, host, _ in job_workers
        if not (workers_named or hosts_named) or address in workers_named or host in hosts_named
    }
    equipped = {
        address
        for address, _, offered in job_workers
        if all(offered.get(name, 0) >= amount for name, amount in resources.items())
    }
    if placed & equipped:
        return None
    hosts = sorted({host for _, host, _ in job_workers})
    reasons = []
    if not placed:
        named = ", ".join(sorted(map(str, [*workers_named, *hosts_named])))
        reasons.append(
            f"it may only run on {named}, and the job's {len(job_workers)} worker(s) are on "
            f"{_few(hosts)}"
            + (" (a worker restarted by its nanny has a new address)" if workers_named else "")
            + "; name workers from client.scheduler_info()['workers'], or submit with "
            "allow_other_workers=True"
        )
    if not equipped:
        offers = sorted({repr(dict(offered)) for _, _, offered in job_workers if offered})
        example = repr(dict(resources))
        # Dask lowers the names in DASK_A__B__C variables, not the keys of a dict value.
        case = next((name for name in resources if name != name.lower()), None)
        # A worker has a "GPU" for each GPU it uses (launcher/plan.py): more come from Slurm.
        gpus = "GPU" in resources and not any(offered.get("GPU") for *_, offered in job_workers)
        reasons.append(
            f"it needs resources {example}, and the workers have "
            f"{_few(offers) if offers else 'none'}; "
            + (
                "a worker has a 'GPU' for each GPU it uses (CUDA_VISIBLE_DEVICES): ask Slurm "
                "for GPUs (#SBATCH --gpus-per-node=N), or "
                if gpus
                else ""
            )
            + "give the workers resources in the jobscript, e.g. "
            + dask_export("distributed.worker.resources", resources)
            + (
                f" (a dict keeps the case of {case!r}, which "
                f"DASK_DISTRIBUTED__WORKER__RESOURCES__{case.upper()}=... would lower)"
                if case
                else ""
            )
        )
    if placed and equipped:
        reasons.append(
            f"the workers it may run on lack resources {dict(resources)!r}, and the workers "
            "that have them are not among those it may run on"
        )
    return "; ".join(reasons)


def _few(names: Sequence[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


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
