"""How the ranks of one job agree on the start and the end, over MPI.

Start: dask-mpi's protocol. The scheduler rank broadcasts its address and everyone
meets at a barrier; the address goes into Dask's config, so a bare ``Client()``
connects. End: the client rank sends STOP with the job's exit status, every other
rank closes what it runs, answers DONE, and all meet at a last barrier before they
exit together. Nothing in this depends on Dask's own comms being healthy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable

import dask

from launcher.comm import STOP, Aborted, MPITimeout, PatientComm
from launcher.interrupt import ServingWatch
from launcher.plan import Plan, RankPlan

log = logging.getLogger("launcher")


def share_address(
    comm: PatientComm, plan: Plan, *, address: str | None = None, failure: str | None = None
) -> str | None:
    """The scheduler rank broadcasts, then all meet (dask-mpi's order of calls).

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
        comm.meet("end of the job", timeout=plan.shutdown_timeout + 10)
    except MPITimeout as err:
        log.error("%s; ending the job", err)
        comm.abort(1)


class StopListener:
    """Has the client rank sent STOP yet? Remembers the job's exit status when it has.

    It also gives up on the client rank (``abandoned``) when the watch says so: a client
    rank that died, or that did not end the job after a signal, cannot keep this rank
    until the walltime. After STOP, ``overdue`` (seconds, action) runs if this rank is
    still closing by then.
    """

    def __init__(
        self,
        comm: PatientComm,
        client_rank: int,
        watch: ServingWatch | None = None,
        overdue: tuple[float, Callable[[], None]] | None = None,
    ) -> None:
        self.comm = comm
        self.client_rank = client_rank
        self.watch = watch
        self.overdue = overdue
        self.exit_code: int | None = None
        self.abandoned: str | None = None  # why, when the client rank was given up
        # The worker's stop watch and the rank's main thread may both ask: only one may
        # receive the message that the other has just probed.
        self._checking = threading.Lock()

    def check(self) -> bool:
        with self._checking:
            return self._check()

    def _check(self) -> bool:
        if self.exit_code is None:
            message = self.comm.poll(STOP, source=self.client_rank)
            if message is not None:
                self.exit_code = int(message[1])
                if self.overdue is not None:
                    timer = threading.Timer(*self.overdue)
                    timer.daemon = True
                    timer.start()
            elif self.watch is not None and (leaving := self.watch.reason_to_leave()):
                self.exit_code, self.abandoned = leaving
                log.error("%s", self.abandoned)
        return self.exit_code is not None

    def wait(self) -> int:
        """Block (sleeping) until STOP arrives or the wait is abandoned."""
        while not self.check():
            time.sleep(0.02)
        assert self.exit_code is not None
        return self.exit_code


def prepare_directory(me: RankPlan) -> str | None:
    """Create the worker's spill directory, private to the user (mode 0700); what went
    wrong, in words for the job log, if it cannot be made."""
    if not me.local_directory:
        return None
    # The job's directory first, and said without the rank: every worker rank of the
    # node fails the same way there, and the client rank says a message once.
    for directory, whose in (
        (os.path.dirname(me.local_directory), f"the job's local directory on {me.host}"),
        (me.local_directory, f"the local directory of worker rank {me.rank} on {me.host}"),
    ):
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as err:
            return (
                f"cannot create {whose} {directory}: {err.strerror}; point "
                "--local-directory (or DASK_LAUNCHER__LOCAL_DIRECTORY) at a writable directory"
            )
    return None


def remove_directory(me: RankPlan) -> None:
    """Remove this rank's directory, and the job's directory once it is empty."""
    if me.local_directory:
        shutil.rmtree(me.local_directory, ignore_errors=True)
        # Another rank on this node may still use it; the last one removes it.
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(me.local_directory))
