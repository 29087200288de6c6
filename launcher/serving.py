"""The ranks that serve: workers, and the scheduler rank of the dedicated layout.

Worker ranks are started by dask-mpi's ``execute``, given the launcher's worker class
(which listens for STOP) and a patient communicator. Each serving rank reports
failures and signals to the client rank and ends when the client rank says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import dask
import dask_mpi
import psutil

from launcher.comm import DONE, FAILED, READY, PatientComm, StartupAborted
from launcher.forkserver import start_worker_helpers, use_fork_server
from launcher.interrupt import ServingWatch
from launcher.plan import Plan, RankPlan
from launcher.protocol import (
    StopListener,
    final_barrier,
    prepare_directory,
    remove_directory,
    share_address,
)
from launcher.scheduler import SchedulerService
from launcher.script_context import import_beside_the_script
from launcher.summary import Summary

log = logging.getLogger("launcher")


def describe(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def worker_class(plan: Plan) -> str:
    return "launcher.worker.MPINanny" if plan.nanny else "launcher.worker.MPIWorker"


def worker_options(
    plan: Plan,
    me: RankPlan,
    stop_check: Callable[[], bool],
    ready: Callable[[], None],
    lost: Callable[[str], None],
) -> dict[str, Any]:
    """Arguments of the worker class beyond those dask-mpi sets itself."""
    options = {
        "stop_check": stop_check,
        "ready": ready,
        "lost": lost,
        # Without it a worker that cannot reach the scheduler retries forever.
        "death_timeout": plan.startup_timeout,
        "paused_timeout": plan.paused_timeout,
    }
    if me.resources is not None:
        options["resources"] = dict(me.resources)
    return options


def end_what_the_tasks_started() -> None:
    """With --no-nanny the tasks ran in this rank, so the programs they started (with
    ``subprocess``) are its children, and those of a task cut off by the job's end ran
    on: holding the rank's output, they kept mpirun waiting after the job's result until
    they ended by themselves. srun's step ends them at its end; so does this, under any
    launcher. (Under a nanny its worker process's group ends them: launcher/worker.py.)"""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


class ServingRank:
    """A worker rank or the dedicated scheduler rank; ``run`` returns the exit status."""

    def __init__(self, plan: Plan, comm: PatientComm) -> None:
        self.plan = plan
        self.comm = comm
        self.me: RankPlan = plan.for_rank(comm.rank)
        # Long enough for the client rank to interrupt the user code and close the job.
        patience = plan.interrupt_grace + 2 * plan.shutdown_timeout + 5
        self.watch = ServingWatch(comm, plan.client_rank, patience)
        self.stop = StopListener(
            comm, plan.client_rank, self.watch, (plan.shutdown_timeout, self.rescue)
        )
        self._ending = threading.Lock()
        self._lost = False

    def run(self) -> int:
        if self.plan.nanny and self.me.is_worker:
            start_worker_helpers(fork_server=False)
            use_fork_server()
        self.watch.install()
        failure = self.run_scheduler() if "scheduler" in self.me.roles else self.run_worker()
        return self.finish(failure)

    def run_worker(self) -> str | None:
        plan, me = self.plan, self.me
        problem = prepare_directory(me)
        if problem is not None:
            # Still take part in the startup protocol, so that nobody waits for us.
            share_address(self.comm, plan)
            return problem
        import_beside_the_script(plan.target)
        options = worker_options(plan, me, self.stop.check, self.say_ready, self.say_lost)
        if me.gpus is not None:
            # The worker's share of the node's GPUs (plan.py, _gpus_of_workers): in this
            # rank's environment (the worker under --no-nanny, and the programs its tasks
            # start), and in the worker process's, which a nanny forks from the fork
            # server, started with the environment the rank had before the plan.
            visible = {"CUDA_VISIBLE_DEVICES": ",".join(me.gpus)}
            os.environ.update(visible)
            if plan.nanny:
                options["env"] = visible
        try:
            dask_mpi.execute(
                None,
                scheduler_rank=plan.scheduler_rank,
                client_rank=plan.client_rank,
                interface=plan.interface,
                nthreads=me.nthreads,
                local_directory=me.local_directory,
                memory_limit=me.memory_limit,
                worker_class=worker_class(plan),
                worker_options=options,
                comm=self.comm,
            )
        except StartupAborted:
            return None  # the scheduler rank reports why; wait for STOP like everyone
        except (TimeoutError, asyncio.TimeoutError, OSError) as err:  # two until Python 3.11
            address = dask.config.get("scheduler_address", None)
            return (
                f"worker rank {me.rank} on {me.host} could not reach the scheduler at "
                f"{address} within {plan.startup_timeout:.0f} s (interface "
                f"{plan.interface or 'not set'}): {describe(err)}"
            )
        except Exception as err:
            return f"worker rank {me.rank} on {me.host}: {describe(err)}"
        if not self._lost and not self.stop.check():
            return f"worker rank {me.rank} on {me.host}: its worker ended before the job did"
        return None

    def say_ready(self) -> None:
        self.comm.send(None, self.plan.client_rank, READY)

    def say_lost(self, reason: str) -> None:
        """The worker closed on its own (called from its event loop): tell the client
        rank at once, which ends the job once no worker is left."""
        self._lost = True
        me = self.me
        message = f"worker rank {me.rank} on {me.host} closed its worker: {reason}"
        self.comm.send(message, self.plan.client_rank, FAILED)

    def run_scheduler(self) -> str | None:
        # The scheduler unpickles the graphs (a function from a module beside the
        # script among them): on a rank of its own (the dedicated layout) it failed
        # them with "No module named ...".
        import_beside_the_script(self.plan.target)
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
        return self.leave(code)

    def leave(self, code: int) -> int:
        if not self._ending.acquire(blocking=False):
            while True:  # rescue() is ending this process from its thread
                time.sleep(60)
        return self._leave(code)

    def _leave(self, code: int) -> int:
        remove_directory(self.me)
        if self.me.is_worker and not self.plan.nanny:
            end_what_the_tasks_started()
        if self.stop.abandoned:
            self.report_for_the_client(code, self.stop.abandoned)
            # The client rank is gone: no DONE, no barrier, and no MPI_Finalize, which
            # may wait for it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        self.comm.send(None, self.plan.client_rank, DONE)
        final_barrier(self.comm, self.plan)
        return 0  # the client rank carries the job's exit status (bootstrap.end_process)

    def report_for_the_client(self, code: int, reason: str) -> None:
        """The client rank cannot write the summary any more: the first serving rank
        writes what it knows, so the job log still says what happened."""
        deputy = min(r.rank for r in self.plan.ranks if r.rank != self.plan.client_rank)
        if self.comm.rank == deputy:
            summary = Summary.from_plan(self.plan)
            summary.status, summary.exit_code, summary.error = "failed", code, reason
            summary.report(self.plan.summary_path)

    def rescue(self) -> None:
        """STOP came, but closing what this rank runs hangs (a task holding the event
        loop, a worker that will not die): leave anyway, from this timer thread."""
        from launcher.bootstrap import end_process

        assert self.stop.exit_code is not None
        if not self._ending.acquire(blocking=False):
            # Closed already, this rank waits for the client rank at the end (the final
            # barrier has a timeout of its own); it said "closing took over" while the
            # client rank freed what the script left.
            return
        log.error(
            "rank %d: closing took over %.0f s after the job ended; leaving",
            self.comm.rank,
            self.plan.shutdown_timeout,
        )
        code = self._leave(self.stop.exit_code)
        self.comm.flush()
        end_process(code)
