"""Do two threads of one rank in MPI at once upset this MPI's start-up? (admin guide)

Every rank sends and probes from a second thread while its main thread runs the
collectives and messages of a launcher start-up: the calls the launcher's client rank
makes while its connections to the other nodes are still being set up. ``turns`` takes
the calls one at a time, as launcher/comm.py does; ``together`` lets them overlap.
Run it many times across nodes and count the MPI library's warnings, e.g. on the test
Slurm with Debian's Open MPI 4.1 (8 of 150 runs warned together, 0 of 150 in turns;
the second line only as root):

    export MPI4PY_LIBMPI=/usr/lib/x86_64-linux-gnu/libmpi.so.40
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    for i in $(seq 100); do tools/minislurm exec -- srun --mpi=pmix -N3 -n6 \\
        .venv/bin/python tools/mpi_thread_race.py together; done 2>&1 | grep -c "TCP connect"
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

import mpi4py

mpi4py.rc.initialize = False
mpi4py.rc.finalize = False
from mpi4py import MPI  # noqa: E402

HEARTBEAT, READY = 15, 16


def main(mode: str) -> None:
    MPI.Init_thread(MPI.THREAD_MULTIPLE)
    comm = MPI.COMM_WORLD.Dup()
    rank, size = comm.Get_rank(), comm.Get_size()
    turn = threading.RLock() if mode == "turns" else contextlib.nullcontext()
    sent: list[Any] = []

    def done(request: Any) -> bool:
        with turn:
            return bool(request.Test())

    def barrier() -> None:
        with turn:
            request = comm.Ibarrier()
        while not done(request):
            time.sleep(0.001)

    def probe(tag: int) -> int | None:
        status = MPI.Status()
        with turn:
            if not comm.iprobe(source=MPI.ANY_SOURCE, tag=tag, status=status):
                return None
            comm.recv(source=status.Get_source(), tag=tag)
            return status.Get_source()

    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(0.0005):
            for peer in range(size):
                if peer != rank:
                    with turn:
                        sent.append(comm.isend(None, dest=peer, tag=HEARTBEAT))
            probe(HEARTBEAT)

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    barrier()
    with turn:
        comm.bcast("address" if rank == 0 else None, root=0)
    barrier()
    if rank == 0:
        waiting = set(range(1, size))
        while waiting:
            waiting.discard(probe(READY))
            time.sleep(0.001)
    else:
        with turn:
            sent.append(comm.isend(None, dest=0, tag=READY))
    barrier()
    stop.set()
    thread.join()
    barrier()
    while sent:
        sent = [request for request in sent if not done(request)]
    while probe(HEARTBEAT) is not None:
        pass
    MPI.Finalize()


if __name__ == "__main__":
    if sys.argv[1:] not in (["turns"], ["together"]):
        sys.exit("usage: python tools/mpi_thread_race.py turns|together")
    main(sys.argv[1])
