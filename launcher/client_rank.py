"""The rank that runs the user's code; it decides when and how the whole job ends.

What it adds to dask-mpi's client rank: the user's code runs in the main thread and
only once every worker has joined (dask-mpi starts it at once, and ``execute`` runs it
in a side thread and hangs until the walltime if it raises); its outcome becomes every
rank's exit status; signals reach it from any rank; and the end is ordered (workers,
then clients, then the scheduler) so that nothing prints CommClosedError tracebacks
(dask-mpi #94, distributed #7192) and no rank is left retrying (dask-mpi #58, #87).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import threading
import time
from typing import Any, NoReturn

from distributed import Client, performance_report

from launcher.comm import DONE, FAILED, READY, STOP, PatientComm, StartupAborted
from launcher.forkserver import start_worker_helpers, use_fork_server
from launcher.interrupt import ClientWatch, Interrupted
from launcher.plan import Plan
from launcher.progress import Progress
from launcher.protocol import final_barrier, prepare_directory, remove_directory, share_address
from launcher.scheduler import SchedulerService
from launcher.script_context import worker_prints_once
from launcher.serving import describe, worker_options
from launcher.stdin import forward_stdin
from launcher.summary import Summary
from launcher.user_clusters import handled
from launcher.usercode import finalize, hard_exits_end_the_job, run_target

log = logging.getLogger("launcher")

#: What to do, after the reason the last worker closed for, where the reason alone does
#: not say it.
LOSS_HINTS = {
    "ModuleNotFoundError": (
        "; workers import from the job's Python environment, the script's directory, "
        "PYTHONPATH and the directories the script adds to sys.path: install the module "
        "there"
    ),
    # A dask-jobqueue worker's --lifetime, set in a Dask config kept from then: there
    # it let a worker leave before its own job's walltime, for a new job to replace it.
    "worker-lifetime-reached": (
        "; distributed.worker.lifetime.duration in your Dask config ended them: in one "
        "job no worker replaces them and the walltime ends them all, so drop the "
        "setting (or set distributed.worker.lifetime.restart to true)"
    ),
}


class ClusterError(RuntimeError):
    """The cluster could not start; the message is meant for the user as is."""


class ClientRank:
    def __init__(self, plan: Plan, comm: PatientComm, started: float) -> None:
        self.plan = plan
        self.comm = comm
        self.me = plan.for_rank(comm.rank)
        self.started = started
        self.ready_at = 0.0  # monotonic time the user's code started
        self.service: SchedulerService | None = None
        self.client: Client | None = None
        self.script_namespace: dict[str, Any] = {}  # kept until the clients close
        self.watch = ClientWatch(comm, plan.interrupt_grace, self.overdue, self.health)
        self._ending = threading.Lock()
        self.summary = Summary.from_plan(plan)

    def run(self) -> int:
        if self.plan.nanny and "worker" in self.me.roles:
            start_worker_helpers(fork_server=False)
            use_fork_server()
        self.watch.install()
        for note in self.plan.notes:
            log.warning("%s", note)
        try:
            try:
                self.start_cluster()
            except Interrupted:
                raise
            except Exception as err:
                self.summary.error = str(err) if isinstance(err, ClusterError) else describe(err)
                self.watch.say_once(self.summary.error)
                self.watch.raising = False
                return self.end(1, ran=False)
            self.ready_at = time.monotonic()
            self.summary.startup_seconds = round(time.time() - self.started, 3)
            try:
                code = self.run_user_code()
            finally:
                self.watch.raising = False
                self.summary.run_seconds = round(time.monotonic() - self.ready_at, 3)
        except Interrupted as err:
            self.watch.raising = False
            code = err.exit_status
        return self.end(code, ran=self.summary.run_seconds is not None)

    def run_user_code(self) -> int:
        """The target, with progress lines and the performance report if asked for."""
        assert self.client is not None
        plan = self.plan
        progress = None
        if plan.progress_interval:
            progress = Progress(self.client, plan.progress_interval, len(plan.workers))
            progress.start()
        try:
            with self.report(), handled(len(plan.workers)), hard_exits_end_the_job(self.exit_now):
                code, self.script_namespace = run_target(plan.target)
                return code
        finally:
            if progress is not None:
                progress.stop()

    @contextlib.contextmanager
    def report(self):
        """distributed's performance report over the whole run, also when it fails; a
        report that cannot be made costs one line, never the job's result."""
        if not self.plan.report_path:
            yield
            return
        report = performance_report(filename=self.plan.report_path)
        try:
            report.__enter__()
        except Exception as err:
            log.warning("cannot record a performance report: %s", describe(err))
            yield
            return
        try:
            yield
        finally:
            try:
                report.__exit__(None, None, None)
            except Exception as err:
                log.warning(
                    "cannot write the performance report to %s: %s",
                    self.plan.report_path,
                    describe(err),
                )

    def health(self) -> str | None:
        """What is wrong with the cluster, if anything (checked by the watch thread)."""
        if self.service is not None and self.service.error is not None:
            return f"the scheduler failed: {describe(self.service.error)}"
        client = self.client
        if client is not None and client.status not in ("running", "closing", "closed"):
            return (
                f"the scheduler at {self.summary.scheduler_address} (rank "
                f"{self.plan.scheduler_rank}) cannot be reached (killed, or its node failed)"
            )
        workers = {w.rank for w in self.plan.workers}
        lost = [message for rank, message in self.watch.failures.items() if rank in workers]
        if workers and len(lost) == len(workers):
            # None comes back: a nanny restarts its worker after a crash, but not one
            # that closed (distributed's close_gracefully), and tasks would wait forever.
            hint = next((hint for cause, hint in LOSS_HINTS.items() if cause in lost[-1]), "")
            return f"no worker is left (the last: {lost[-1]}{hint})"
        return None

    def lost_worker(self, reason: str) -> None:
        """The worker in this process (single-process mode) is closing: on its own, unless
        the job is ending (the scheduler's service closes it then)."""
        if not self.watch.ending:
            message = f"rank {self.me.rank} closed its worker: {reason}"
            self.watch.report_failure(self.me.rank, message)

    def start_cluster(self) -> None:
        plan = self.plan
        if "scheduler" in self.me.roles:
            options = None
            if "worker" in self.me.roles:  # one process: the worker shares the loop
                problem = prepare_directory(self.me)
                if problem is not None:
                    raise ClusterError(problem)
                options = {
                    **worker_options(plan, self.me, lambda: False, lambda: None, self.lost_worker),
                    "nthreads": self.me.nthreads,
                    "memory_limit": self.me.memory_limit,
                    "local_directory": self.me.local_directory,
                    "interface": plan.interface,
                    "name": self.me.rank,
                }
            self.service = SchedulerService(plan, options)
            try:
                address = self.service.start()
            except Exception as err:
                share_address(self.comm, plan, failure=f"scheduler: {describe(err)}")
                raise ClusterError(f"the scheduler did not start: {describe(err)}") from err
            share_address(self.comm, plan, address=address)
        else:
            try:
                address = share_address(self.comm, plan)
            except StartupAborted as err:
                raise ClusterError(str(err)) from None
        # Interrupts wait until here: every rank has the scheduler's address (or the
        # news that there is none), so each can be stopped in order; an interrupt
        # before it would leave them waiting for the address until the startup timeout.
        self.watch.raising = True
        if self.watch.cause is not None:
            raise self.watch.cause
        self.summary.scheduler_address = address
        worker_prints_once()
        self.client = Client(address)
        if plan.stdin_through_scheduler:
            forward_stdin(address)
        self.wait_for_workers()
        self.summary.dashboard_url = self.announce_dashboard()

    def announce_dashboard(self) -> str | None:
        """Where the dashboard is and, in a Slurm job, how to reach it from a laptop."""
        assert self.client is not None
        port = self.client.scheduler_info()["services"].get("dashboard")
        if not (self.plan.dashboard and port):
            return None
        bound = self.plan.dashboard_address.rpartition(":")[0].strip("[]")
        host = (
            bound
            if bound not in ("", "0.0.0.0", "::")
            else (self.plan.for_rank(self.plan.scheduler_rank).host)
        )
        url = f"http://{host}:{port}/status"
        log.info("dashboard at %s", url)
        if self.plan.login_host:
            user = os.environ.get("USER") or os.environ.get("LOGNAME") or getpass.getuser()
            log.info(
                "to open it from your laptop: ssh -N -L %d:%s:%d %s@%s  then browse "
                "http://localhost:%d/status",
                port,
                host,
                port,
                user,
                self.plan.login_host,
                port,
            )
        return url

    def wait_for_workers(self) -> None:
        """Start user code only when every worker rank has joined, or fail clearly.

        Worker ranks say READY over MPI once their worker has registered, which wakes
        this rank at once (``Client.wait_for_workers`` polls every 0.1 s); the scheduler
        then confirms in one call. A worker in this process started with the scheduler.
        """
        assert self.client is not None
        waiting = {w.rank for w in self.plan.workers if w.rank != self.me.rank}
        deadline = time.monotonic() + self.plan.startup_timeout
        while waiting:
            failed = self.comm.poll(FAILED)
            if failed is not None:
                raise ClusterError(failed[1])
            ready = self.comm.poll(READY)
            if ready is not None:
                waiting.discard(ready[0])
            elif time.monotonic() > deadline:
                raise self.missing_workers()
            else:
                time.sleep(0.002)
        try:
            self.client.wait_for_workers(
                len(self.plan.workers), timeout=max(deadline - time.monotonic(), 2.0)
            )
        except TimeoutError:
            raise self.missing_workers() from None

    def missing_workers(self) -> ClusterError:
        assert self.client is not None
        joined = {w["name"] for w in self.client.scheduler_info()["workers"].values()}
        missing = [w for w in self.plan.workers if w.rank not in joined]
        names = ", ".join(f"rank {w.rank} on {w.host}" for w in missing)
        return ClusterError(
            f"{len(missing)} of {len(self.plan.workers)} workers did not join the scheduler "
            f"at {self.summary.scheduler_address} within {self.plan.startup_timeout:.0f} s"
            f" (missing: {names}); check --interface ({self.plan.interface or 'not set'})"
            " and that the nodes can reach each other"
        )

    def end(self, code: int, *, ran: bool, error: str | None = None) -> int:
        """Close everything in an order that produces no errors, then report."""
        if not self._ending.acquire(blocking=False):
            # The grace timer is already ending the job from its thread and will exit
            # the process; this thread has nothing left to do.
            while True:
                time.sleep(60)
        self.watch.ending = True
        self.watch.stop_watching()
        plan = self.plan
        ending = time.monotonic()
        cause = self.watch.cause
        if cause is not None:
            code = code or cause.exit_status
            self.summary.status = cause.status
            self.summary.error = error or cause.reason
        else:
            # The user's code may have failed because the cluster did (before the watch
            # noticed): say so.
            self.summary.error = self.summary.error or self.health()
            self.summary.status = "ok" if code == 0 else "failed"
        self.summary.exit_code = code
        others = [r.rank for r in plan.ranks if r.rank != self.me.rank]
        workers = [r for r in others if plan.for_rank(r).is_worker]
        schedulers = [r for r in others if r not in workers]
        self._job_over_on_the_scheduler()
        late = self._stop_ranks(workers, code)
        for client in list(Client._instances):  # the user's clients too: no reconnect noise
            # Closing releases each future the client still holds with a message of its
            # own (45 us each here: 0.9 s for 20,000); the scheduler forgets them anyway.
            client.futures.clear()
            # a scheduler that is gone; asyncio's is its own class until Python 3.11
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                client.close(timeout=2)
        finalize(self.script_namespace, plan.shutdown_timeout)
        if self.service is not None and not self.service.stop(plan.shutdown_timeout):
            late.append(self.me.rank)
        late += self._stop_ranks(schedulers, code)
        if "worker" in self.me.roles:
            remove_directory(self.me)
        if ran:
            self.summary.shutdown_seconds = round(time.monotonic() - ending, 3)
        if late:
            # Say it, and say the job's status truly: MPI_Abort below ends the stuck ranks
            # (no walltime waits for them), and with them the job, non-zero, even after
            # a script that succeeded (it said "ok, exit 0" and the job failed).
            note = (
                f"ranks {late} did not close within the shutdown timeout "
                f"({plan.shutdown_timeout:g} s), so the job ends them with MPI_Abort, "
                f"after your code ended with status {code}"
            )
            if not plan.nanny:
                note += " (under --no-nanny a task that holds the GIL keeps its rank busy)"
            log.warning("%s", note)
            self.summary.error = f"{self.summary.error}; {note}" if self.summary.error else note
            code = code or 1
            self.summary.status, self.summary.exit_code = "failed", code
        self.summary.report(plan.summary_path)
        if late:
            self.comm.abort(code)
        final_barrier(self.comm, plan)
        return code

    def overdue(self) -> None:
        """The user's code ignored the interrupt past the grace period: end the job
        from this (timer) thread, since the main thread is stuck in user code."""
        cause = self.watch.cause
        assert cause is not None
        error = (
            f"your code did not stop within {self.plan.interrupt_grace:.0f} s of: "
            f"{cause.reason}; job ended"
        )
        log.error("%s", error)
        self._end_from_here(cause.exit_status, error=error)

    def exit_now(self, status: int) -> NoReturn:
        """``os._exit(status)`` in the user's code: end the job in order with that status,
        from the calling thread, running no more of the user's code."""
        self.summary.run_seconds = round(time.monotonic() - self.ready_at, 3)
        self._end_from_here(status & 0xFF)

    def _end_from_here(self, code: int, error: str | None = None) -> NoReturn:
        """End the job and this process from the calling thread, whatever the main
        thread is doing."""
        from launcher.bootstrap import end_process

        self.watch.raising = False
        code = self.end(code, ran=True, error=error)
        self.comm.flush()
        end_process(code)

    def _job_over_on_the_scheduler(self) -> None:
        """The scheduler closes its plugins while the workers are still there, and lets
        the workers and clients go without per-task work from now on
        (``JobScheduler``): the results the user's code still holds are wanted by nobody
        once it has ended."""
        if self.client is None or self.client.status != "running":
            return
        with contextlib.suppress(Exception):  # a scheduler that is gone: nothing to do
            self.client.sync(
                self.client.scheduler.launcher_job_over,
                callback_timeout=self.plan.shutdown_timeout + 2,
            )

    def _stop_ranks(self, ranks: list[int], code: int) -> list[int]:
        """Send STOP and wait for DONE; the ranks that did not answer in time."""
        for rank in ranks:
            self.comm.send(code, rank, STOP)
        waiting = set(ranks)
        # Serving ranks leave by themselves shutdown_timeout after STOP: wait a bit longer.
        deadline = time.monotonic() + self.plan.shutdown_timeout + 2
        while waiting and time.monotonic() < deadline:
            message = self.comm.poll(DONE)
            if message is None:
                failed = self.comm.poll(FAILED)
                if failed is not None:
                    self.watch.say_once(failed[1])
                    continue
                time.sleep(0.002)
                continue
            waiting.discard(message[0])
        return sorted(waiting)
