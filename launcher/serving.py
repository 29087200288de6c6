"""The ranks that serve: workers, and the scheduler rank of the dedicated layout.

Worker ranks are started by dask-mpi's ``execute``, given the launcher's worker class
(which listens for STOP) and a patient communicator. Each serving rank reports
failures and signals to the client rank and ends when the client rank says so.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import dask_mpi

from launcher.comm import DONE, FAILED, PatientComm, StartupAborted
from launcher.interrupt import RankInterrupts
from launcher.plan import Plan, RankPlan
from launcher.protocol import (
    StopListener,
    final_barrier,
    prepare_directory,
    remove_directory,
    share_address,
)
from launcher.scheduler import SchedulerService

log = logging.getLogger("launcher")


def describe(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def worker_options(plan: Plan, stop_check) -> dict[str, Any]:
    """Arguments of ``launcher.worker.MPIWorker`` beyond those dask-mpi sets itself."""
    return {
        "stop_check": stop_check,
        # Without it a worker that cannot reach the scheduler retries forever.
        "death_timeout": plan.startup_timeout,
    }


class ServingRank:
    """A worker rank or the dedicated scheduler rank; ``run`` returns the exit status."""

    def __init__(self, plan: Plan, comm: PatientComm) -> None:
        self.plan = plan
        self.comm = comm
        self.me: RankPlan = plan.for_rank(comm.rank)
        # Long enough for the client rank to interrupt the user code and close the job.
        patience = plan.interrupt_grace + 2 * plan.shutdown_timeout + 5
        self.interrupts = RankInterrupts(comm, plan.client_rank, patience)
        self.stop = StopListener(comm, plan.client_rank, self.interrupts)

    def run(self) -> int:
        self.interrupts.install()
        failure = self.run_scheduler() if "scheduler" in self.me.roles else self.run_worker()
        return self.finish(failure)

    def run_worker(self) -> str | None:
        plan, me = self.plan, self.me
        prepare_directory(me)
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
                worker_options=worker_options(plan, self.stop.check),
                comm=self.comm,
            )
        except StartupAborted:
            return None  # the scheduler rank reports why; wait for STOP like everyone
        except Exception as err:
            return f"worker rank {me.rank} on {me.host}: {describe(err)}"
        return None

    def run_scheduler(self) -> str | None:
        service = SchedulerService(self.plan)
        try:
            address = service.start()
        except Exception as err:
            failure = f"scheduler on rank {self.me.rank}: {describe(err)}"
            share_address(self.comm, self.plan, failure=failure)
            return failure
        share_address(self.comm, self.plan, address=address)
        failure = None
        while not self.stop.check():
            if service.error is not None:
                failure = f"scheduler on rank {self.me.rank}: {describe(service.error)}"
                break
            time.sleep(0.05)
        if not service.stop(self.plan.shutdown_timeout):
            log.warning("the scheduler did not close within %.0f s", self.plan.shutdown_timeout)
        return failure

    def finish(self, failure: str | None) -> int:
        """Report, learn the job's exit status, say DONE, and meet everyone at the end."""
        if failure:
            self.comm.send(failure, self.plan.client_rank, FAILED)
        # After a failure the client rank may still be running user code (a lost worker
        # is survivable), so wait for its STOP; it ends the job when it is done.
        code = self.stop.wait()
        remove_directory(self.me)
        if not self.stop.abandoned:
            self.comm.send(None, self.plan.client_rank, DONE)
            final_barrier(self.comm, self.plan)
        return code
