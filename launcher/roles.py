"""Doing: each rank plays its part of the plan, and the job ends the same way everywhere.

Roles follow dask-jobqueue's runners and dask-mpi's protocol: the scheduler rank
broadcasts its address over MPI and everyone meets at a barrier; worker ranks run
dask-mpi's ``execute``; the client rank runs the user's code. What dask-mpi leaves out
is added here:

* user code in the main thread of the client rank, started only once every worker has
  joined (dask-mpi starts it at once);
* its outcome becomes every rank's exit status (dask-mpi: rank 1's own status only;
  ``execute`` even hangs until the walltime when the client function raises);
* a shutdown that does not depend on Dask's comms: STOP over MPI closes the workers
  first, then the scheduler, all within the shutdown timeout, so no rank is left
  retrying until the walltime (dask-mpi #58, #87) and no CommClosedError tracebacks are
  printed on the way (dask-mpi #94, distributed #7192);
* exit with ``os._exit`` after ``MPI_Finalize``, because interpreter shutdown can hang
  on threads distributed leaves behind (distributed #8644).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import traceback
from typing import Any

import dask
import dask_mpi
from distributed import Client

from launcher.comm import (
    DONE,
    FAILED,
    STOP,
    Aborted,
    MPITimeout,
    PatientComm,
    StartupAborted,
)
from launcher.plan import Plan, RankPlan
from launcher.scheduler import SchedulerService
from launcher.summary import Summary
from launcher.usercode import run_target

log = logging.getLogger("launcher")


def _describe(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


class StopListener:
    """Has the client rank sent STOP yet? Remembers the job's exit status when it has."""

    def __init__(self, comm: PatientComm, client_rank: int) -> None:
        self.comm = comm
        self.client_rank = client_rank
        self.exit_code: int | None = None

    def check(self) -> bool:
        if self.exit_code is None:
            message = self.comm.poll(STOP, source=self.client_rank)
            if message is not None:
                self.exit_code = int(message[1])
        return self.exit_code is not None

    def wait(self, timeout: float | None) -> int | None:
        """The exit status once STOP arrives; None if ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.check():
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        return self.exit_code


def worker_options(plan: Plan, me: RankPlan, stop_check) -> dict[str, Any]:
    """Arguments of ``launcher.worker.MPIWorker`` beyond those dask-mpi sets itself."""
    return {
        "stop_check": stop_check,
        # Without it a worker that cannot reach the scheduler retries forever.
        "death_timeout": plan.startup_timeout,
    }


def prepare_directory(me: RankPlan) -> None:
    """Worker spill directory, private to the user (mode 0700)."""
    if me.local_directory:
        os.makedirs(os.path.dirname(me.local_directory), mode=0o700, exist_ok=True)
        os.makedirs(me.local_directory, mode=0o700, exist_ok=True)


def remove_directory(me: RankPlan) -> None:
    """Remove this rank's directory, and the job's directory once it is empty."""
    if me.local_directory:
        shutil.rmtree(me.local_directory, ignore_errors=True)
        # Another rank on this node may still use it; the last one removes it.
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(me.local_directory))


class Rank:
    """One rank's run: returns the exit status this process must end with."""

    def __init__(self, plan: Plan, comm: PatientComm, started: float) -> None:
        self.plan = plan
        self.comm = comm
        self.me = plan.for_rank(comm.rank)
        self.started = started
        self.stop = StopListener(comm, plan.client_rank)

    def run(self) -> int:
        if "client" in self.me.roles:
            return ClientRank(self.plan, self.comm, self.started).run()
        if "scheduler" in self.me.roles:
            return self.run_scheduler()
        return self.run_worker()

    # --- worker ranks ---------------------------------------------------------

    def run_worker(self) -> int:
        plan, me = self.plan, self.me
        prepare_directory(me)
        failure = None
        try:
            dask_mpi.execute(
                None,
                scheduler_rank=plan.scheduler_rank,
                client_rank=plan.client_rank,
                interface=plan.interface,
                nthreads=me.nthreads,
                local_directory=me.local_directory,
                memory_limit=me.memory_limit,
                worker_class="launcher.worker.MPIWorker",
                worker_options=worker_options(plan, me, self.stop.check),
                comm=self.comm,
            )
        except StartupAborted:
            pass  # the scheduler rank reports why; wait for its STOP like everyone
        except Exception as err:
            failure = f"worker rank {me.rank} on {me.host}: {_describe(err)}"
        return self._finish(failure)

    # --- the scheduler rank of the dedicated layout ---------------------------

    def run_scheduler(self) -> int:
        service = SchedulerService(self.plan)
        failure = None
        try:
            address = service.start()
        except Exception as err:
            failure = f"scheduler on rank {self.me.rank}: {_describe(err)}"
            share_address(self.comm, self.plan, failure=failure)
            return self._finish(failure)
        share_address(self.comm, self.plan, address=address)
        while not self.stop.check():
            if service.error is not None:
                failure = f"scheduler on rank {self.me.rank}: {_describe(service.error)}"
                break
            time.sleep(0.05)
        if not service.stop(self.plan.shutdown_timeout):
            log.warning("the scheduler did not close within %.0f s", self.plan.shutdown_timeout)
        return self._finish(failure)

    def _finish(self, failure: str | None) -> int:
        """Report, learn the job's exit status, say DONE, and meet everyone at the end."""
        if failure:
            self.comm.send(failure, self.plan.client_rank, FAILED)
        # After a failure the client rank may still be running user code (a lost worker
        # is survivable), so wait for its STOP; it ends the job when it is done.
        code = self.stop.wait(timeout=None)
        remove_directory(self.me)
        self.comm.send(None, self.plan.client_rank, DONE)
        final_barrier(self.comm, self.plan)
        return code if code is not None else 1


def share_address(
    comm: PatientComm, plan: Plan, *, address: str | None = None, failure: str | None = None
) -> str | None:
    """dask-mpi's startup protocol: the scheduler rank broadcasts, then all meet.

    A failed scheduler broadcasts ``Aborted`` instead, which the other ranks raise as
    StartupAborted (and then skip the barrier), so nobody waits for an address.
    """
    if failure:
        comm.bcast(Aborted(failure), root=plan.scheduler_rank)
        return None
    value = comm.bcast(address, root=plan.scheduler_rank)
    comm.Barrier()
    dask.config.set(scheduler_address=value)
    return value


def final_barrier(comm: PatientComm, plan: Plan) -> None:
    """No rank exits before the client rank has written the summary: some launchers
    (MPICH's hydra, srun --kill-on-bad-exit) kill the others when one exits non-zero."""
    try:
        comm.wait(comm.comm.Ibarrier(), "end of the job", timeout=plan.shutdown_timeout + 10)
    except MPITimeout as err:
        log.error("%s; ending the job", err)
        comm.abort(1)


class ClientRank:
    """The rank that runs the user's code; it decides when and how the job ends."""

    def __init__(self, plan: Plan, comm: PatientComm, started: float) -> None:
        self.plan = plan
        self.comm = comm
        self.me = plan.for_rank(comm.rank)
        self.started = started
        self.service: SchedulerService | None = None
        self.client: Client | None = None
        self.summary = Summary(
            mpi_size=plan.mpi_size,
            layout=plan.layout,
            workers=len(plan.workers),
            threads_per_worker=plan.workers[0].nthreads if plan.workers else None,
            memory_limit_bytes=min(w.memory_limit for w in plan.workers) if plan.workers else None,
            target=plan.target.to_dict(),
            worker_hosts=[w.host for w in plan.workers],
        )

    def run(self) -> int:
        try:
            self.start_cluster()
        except Exception as err:
            self.summary.error = str(err) if isinstance(err, ClusterError) else _describe(err)
            print(f"launcher: {self.summary.error}", file=sys.stderr, flush=True)
            return self.end(1, ran=False)
        ready = time.monotonic()
        self.summary.startup_seconds = round(time.time() - self.started, 3)
        code = run_target(self.plan.target)
        self.summary.run_seconds = round(time.monotonic() - ready, 3)
        return self.end(code, ran=True)

    def start_cluster(self) -> None:
        plan = self.plan
        if "scheduler" in self.me.roles:
            single = "worker" in self.me.roles
            if single:
                prepare_directory(self.me)
            options = None
            if single:
                options = {
                    **worker_options(plan, self.me, lambda: False),
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
                share_address(self.comm, plan, failure=f"scheduler: {_describe(err)}")
                raise ClusterError(f"the scheduler did not start: {_describe(err)}") from err
            share_address(self.comm, plan, address=address)
            self.summary.dashboard_url = self.service.dashboard_url
        else:
            try:
                address = share_address(self.comm, plan)
            except StartupAborted as err:
                raise ClusterError(str(err)) from None
        self.summary.scheduler_address = address
        self.client = Client(address)
        if self.summary.dashboard_url is None and plan.dashboard:
            self.summary.dashboard_url = self.client.dashboard_link
        self.wait_for_workers()

    def wait_for_workers(self) -> None:
        """Start user code only when every worker rank has joined, or fail clearly."""
        assert self.client is not None
        expected = len(self.plan.workers)
        deadline = time.monotonic() + self.plan.startup_timeout
        while True:
            failed = self.comm.poll(FAILED)
            if failed is not None:
                raise ClusterError(failed[1])
            try:
                self.client.wait_for_workers(expected, timeout=0.2)
                return
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                joined = {w["name"] for w in self.client.scheduler_info()["workers"].values()}
                missing = [w for w in self.plan.workers if w.rank not in joined]
                names = ", ".join(f"rank {w.rank} on {w.host}" for w in missing)
                raise ClusterError(
                    f"{len(missing)} of {expected} workers did not join the scheduler at "
                    f"{self.summary.scheduler_address} within {self.plan.startup_timeout:.0f} s"
                    f" (missing: {names}); check --interface "
                    f"({self.plan.interface or 'not set'}) and that the nodes can reach "
                    "each other"
                )

    def end(self, code: int, *, ran: bool) -> int:
        """Close everything in an order that produces no errors, then report."""
        plan = self.plan
        ending = time.monotonic()
        self.summary.exit_code = code
        self.summary.status = "ok" if code == 0 else "failed"
        others = [r.rank for r in plan.ranks if r.rank != self.me.rank]
        workers = [r for r in others if plan.for_rank(r).is_worker]
        schedulers = [r for r in others if r not in workers]
        late = self._stop_ranks(workers, code)
        for client in list(Client._instances):  # the user's clients too: no reconnect noise
            client.close(timeout=2)
        if self.service is not None and not self.service.stop(plan.shutdown_timeout):
            late.append(self.me.rank)
        late += self._stop_ranks(schedulers, code)
        if "worker" in self.me.roles:
            remove_directory(self.me)
        if ran:
            self.summary.shutdown_seconds = round(time.monotonic() - ending, 3)
        if late:
            self.summary.error = f"ranks {late} did not close within the shutdown timeout"
        self.summary.report(plan.summary_path)
        if late:
            self.comm.abort(code or 1)  # ends the stuck ranks; no walltime waits for them
        final_barrier(self.comm, plan)
        return code

    def _stop_ranks(self, ranks: list[int], code: int) -> list[int]:
        """Send STOP and wait for DONE; the ranks that did not answer in time."""
        for rank in ranks:
            self.comm.send(code, rank, STOP)
        waiting = set(ranks)
        deadline = time.monotonic() + self.plan.shutdown_timeout
        while waiting and time.monotonic() < deadline:
            message = self.comm.poll(DONE)
            if message is None:
                failed = self.comm.poll(FAILED)
                if failed is not None:
                    log.warning("%s", failed[1])
                    continue
                time.sleep(0.002)
                continue
            waiting.discard(message[0])
        return sorted(waiting)


class ClusterError(RuntimeError):
    """The cluster could not start; the message is meant for the user as is."""
