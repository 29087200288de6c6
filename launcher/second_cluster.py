"""Refuse a second Dask cluster started by the user's code: the job is the cluster.

The tutorial's scripts start with ``SLURMCluster(...)`` and ``cluster.scale(5)``. A
script moved to the launcher with those lines left in does not fail under Slurm: every
worker becomes a Slurm job of its own again, waiting in the queue and dying at its own
walltime, while the workers this job was given sit idle until it ends. Off Slurm the
worker jobs never come and ``compute()`` waits forever. A ``LocalCluster(...)`` from a
laptop script crowds the client rank's cores the same way. So while the user's code
runs, creating any of distributed's ``SpecCluster`` family (LocalCluster, every
dask-jobqueue cluster) raises at the user's line, before a job is submitted or a
process started: dask-jobqueue's clusters call ``SpecCluster.__init__`` before they
scale, and distributed is imported already, so dask-jobqueue need not be.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed.deploy.spec import SpecCluster


class SecondCluster(RuntimeError):
    """The user's code tried to start a Dask cluster of its own inside the job."""


@contextmanager
def refused(workers: int) -> Iterator[None]:
    """While inside, ``SpecCluster`` and its subclasses cannot be created."""

    def refuse(cluster: SpecCluster, *args: Any, **kwargs: Any) -> None:
        name = type(cluster).__name__
        raise SecondCluster(
            f"{name}(...) would start a second Dask cluster inside the launcher's job "
            f"while this job's {workers} worker(s) sit idle: delete the {name}(...), "
            "cluster.scale(...) and cluster.close() lines, and write Client() for "
            "Client(cluster): it connects to the job's cluster (docs/migration.md)"
        )

    original = SpecCluster.__init__
    SpecCluster.__init__ = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        SpecCluster.__init__ = original  # type: ignore[method-assign]
