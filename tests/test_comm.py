"""PatientComm lets one thread at a time into MPI (fast, no MPI: a recording stand-in).

Why it matters on real MPI: Open MPI 4.1's TCP transport races when two threads of a
rank are in MPI while it connects to a peer (launcher/comm.py, tools/mpi_thread_race.py).
"""

from __future__ import annotations

import threading
import time

import mpi4py

from launcher.comm import STOP, PatientComm

mpi4py.rc.initialize = False  # poll() makes an MPI.Status: no MPI_Init in pytest for it


class OneAtATime:
    """A communicator whose every call lasts a moment and notes if another overlapped."""

    def __init__(self) -> None:
        self.inside = 0
        self.overlaps = 0
        self.calls = 0
        self._count = threading.Lock()

    def _call(self) -> None:
        with self._count:
            self.inside += 1
            self.calls += 1
            if self.inside > 1:
                self.overlaps += 1
        time.sleep(0.0005)
        with self._count:
            self.inside -= 1

    def Dup(self) -> OneAtATime:
        return self

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 2

    def Ibarrier(self) -> OneAtATime:
        self._call()
        return self

    def Test(self) -> bool:
        self._call()
        return True

    def bcast(self, obj: object, root: int = 0) -> object:
        self._call()
        return obj

    def isend(self, obj: object, dest: int, tag: int) -> OneAtATime:
        self._call()
        return self

    def iprobe(self, source: int, tag: int, status: object) -> bool:
        self._call()
        return False


def test_threads_take_turns_in_mpi():
    """The client rank's watch thread sends and probes while its main thread meets the
    others and probes: as it does during start-up."""
    raw = OneAtATime()
    comm = PatientComm(raw)
    stop = time.monotonic() + 0.5

    def watch() -> None:
        while time.monotonic() < stop:
            comm.send(None, 1, STOP)
            comm.poll(STOP)

    thread = threading.Thread(target=watch)
    thread.start()
    while time.monotonic() < stop:
        comm.bcast("address")
        comm.poll(STOP)
        comm.flush()
    thread.join()
    assert raw.calls > 200
    assert raw.overlaps == 0
