"""Clusters the user's code asks for: the job is the cluster already.

Scripts carry the cluster-making lines of the way they were run before, and inside the
launcher each of those went wrong:

- dask-mpi's ``initialize()`` (or ``execute()``) on the client rank started a second
  scheduler and waited in an MPI broadcast that no other rank joins: the job hung until
  its walltime. Here the cluster they would make is up, and the script runs where
  dask-mpi runs it, on the client rank: ``initialize()`` returns at once (True: this is
  the client), ``execute(main)`` calls ``main``, ``send_close_signal()`` does nothing,
  as the launcher closes the cluster when the script ends. Sizing passed to them is
  said to be ignored, in one line.
- A laptop's ``Client(n_workers=4, threads_per_worker=2)`` makes a ``LocalCluster``
  with those arguments; with the job's scheduler in Dask's config distributed refused
  them instead ("Unexpected keyword arguments"). They are said to be ignored, as
  dask-mpi's are, and the client connects to the job's cluster.
- A client script of dask-mpi's command line (``mpirun dask-mpi --scheduler-file F``)
  connects with ``Client(scheduler_file=F)``, and distributed waits for that file
  without a timeout: nobody writes it here, so the job hung. Such a client connects to
  the job's scheduler instead, saying so in one line.
- ``client.shutdown()``, which ends many scripts, closed the scheduler under the
  launcher's own client, which logged a 30-line reconnect traceback, and every nanny's
  worker process then waited 2 s at exit (distributed's WorkerProcess joins its stop-
  queue thread, timeout 2 s, before it tells that thread to stop). The launcher ends
  the cluster when the script ends, in an order that prints nothing, so here
  ``shutdown()`` closes the client only, as dask-mpi's ``send_close_signal()`` does.
- ``client.wait_for_workers(n)``, left from a ``cluster.scale(n)``, waits forever when
  the job has fewer than n workers (they all joined before the script started, and no
  more will come): it raises at once instead.
- ``dask.config.set(scheduler="processes")`` (or "threads", "sync"), left from a
  laptop script, makes every ``compute()`` run in the client's process while the job's
  workers sit idle: one line says so.
- ``dask.config.set(...)`` of a worker, nanny or scheduler setting, at the top of a
  script, reached the cluster that dask-mpi's ``initialize()`` or a ``LocalCluster``
  started after it; here the cluster started before the script, and the setting was
  silently without effect (``distributed.worker.daemon: False`` for a task's
  ``multiprocessing.Pool``, memory thresholds). It is still set, for the client's
  process, and one line says how to set it for the job.
- dask-jobqueue's ``SLURMRunner`` (its way to run a cluster inside one job: every Slurm
  task runs the script, and the runner gives each its role) made the client rank,
  Slurm task 0, a second scheduler that waited for workers that never came: the job
  hung until its walltime. Here a runner is the client of the job's cluster, as its
  client task would be: ``Client(runner)`` connects to it and ``runner.n_workers`` is
  the job's worker count. And importing dask-jobqueue (even an unused
  ``from dask_jobqueue import SLURMCluster`` left in) set Ctrl-C's handler to
  ``sys.exit()`` (dask_jobqueue/runner.py, at import), so that an interrupted job
  ended "ok, exit 0": the launcher's handler is put back.
- The tutorial's ``SLURMCluster(...)`` and ``cluster.scale(5)`` do not fail under
  Slurm: every worker becomes a Slurm job of its own again, waiting in the queue and
  dying at its own walltime, while the workers this job was given sit idle until it
  ends; off Slurm the worker jobs never come and ``compute()`` waits forever. A
  laptop's ``LocalCluster(...)`` runs its workers on the client rank's cores the same
  way. So creating any of distributed's ``SpecCluster`` family (LocalCluster, every
  dask-jobqueue cluster) raises at the user's line, before a job is submitted or a
  process started: dask-jobqueue's clusters call ``SpecCluster.__init__`` before they
  scale, and distributed is imported already, so dask-jobqueue need not be.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import inspect
import logging
import os
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import dask
import dask.config
import dask_mpi
from distributed import Client
from distributed.core import Status
from distributed.deploy.spec import SpecCluster

from launcher.config import dask_export

log = logging.getLogger("launcher")

#: dask-mpi's arguments that say nothing about the cluster's size or place.
_NEUTRAL = {"comm", "exit"}


class SecondCluster(RuntimeError):
    """The user's code tried to start a Dask cluster of its own inside the job."""


@contextmanager
def handled(workers: int) -> Iterator[None]:
    """While inside, dask-mpi's calls and dask-jobqueue's runners find the cluster up,
    a client asking for a scheduler file gets the job's scheduler,
    ``client.shutdown()`` closes the client, waiting for more workers than the job has
    fails, setting what only the cluster reads says how to set it for the job, a local
    scheduler is pointed out, and ``SpecCluster`` and its subclasses cannot be
    created."""

    def refuse(cluster: SpecCluster, *args: Any, **kwargs: Any) -> None:
        name = type(cluster).__name__
        raise SecondCluster(
            f"{name}(...) would start a second Dask cluster inside the launcher's job "
            f"while this job's {workers} worker(s) sit idle: delete the {name}(...), "
            "cluster.scale(...) and cluster.close() lines, and write Client() for "
            "Client(cluster): it connects to the job's cluster (docs/migration.md)"
        )

    original_initialize, original_execute = dask_mpi.initialize, dask_mpi.execute

    def initialize(*args: Any, **kwargs: Any) -> bool:
        _ignored("dask_mpi.initialize", _given(original_initialize, args, kwargs))
        return True

    def execute(*args: Any, **kwargs: Any) -> None:
        given = _given(original_execute, args, kwargs)
        function = given.pop("client_function", None)
        function_args = given.pop("client_args", ())
        function_kwargs = given.pop("client_kwargs", None) or {}
        _ignored("dask_mpi.execute", given)
        if callable(function):
            function(*function_args, **function_kwargs)

    original_client_init = Client.__init__

    def client_init(
        client: Client, address: Any = None, *args: Any, scheduler_file: Any = None, **kwargs: Any
    ) -> None:
        if scheduler_file is not None and address is None:
            log.info(
                "Client(scheduler_file=%r) in your script connects to the launcher's "
                "cluster, which writes no scheduler file",
                scheduler_file,
            )
            scheduler_file = None
        if address is None:
            local = {key: kwargs.pop(key) for key in sorted(kwargs) if key not in client_keys}
            _ignored("Client", local)
        original_client_init(client, address, *args, scheduler_file=scheduler_file, **kwargs)

    # A laptop's Client(n_workers=4, threads_per_worker=2) passes these on to the
    # LocalCluster it makes; with the job's scheduler in Dask's config, distributed
    # refused them ("Unexpected keyword arguments") and the script failed there.
    client_keys = set(inspect.signature(original_client_init).parameters)

    original_wait_for_workers = Client.wait_for_workers

    def wait_for_workers(client: Client, n_workers: int, timeout: float | None = None) -> Any:
        if isinstance(n_workers, int) and n_workers > workers:
            raise ValueError(
                f"wait_for_workers({n_workers}): this job has {workers} worker(s), all "
                "joined before your script started, and no more will come; wait for at "
                f"most {workers}, or give the job more tasks"
            )
        # what an asynchronous client's caller awaits
        return original_wait_for_workers(client, n_workers, timeout)

    class config_set(dask.config.set):
        def __init__(self, arg: Mapping | None = None, *args: Any, **kwargs: Any) -> None:
            super().__init__(arg, *args, **kwargs)
            if os.getpid() != client_process:  # a process the script forked
                return
            scheduler = {**(arg or {}), **kwargs}.get("scheduler")
            if scheduler in _LOCAL_SCHEDULERS and "scheduler" not in said:
                said.add("scheduler")
                log.info(
                    "dask.config.set(scheduler=%r) in your script: Dask computes in the "
                    "client's process then, not on this job's %d worker(s) (delete that "
                    "line to use them)",
                    scheduler,
                    workers,
                )
            for key, value in _cluster_settings(arg, kwargs):
                if key not in said:
                    said.add(key)
                    log.info(
                        "dask.config.set(%s=%r) in your script does not reach the "
                        "workers and scheduler, which started before it: set it for the "
                        "job instead (%s in the jobscript, or a Dask YAML file)",
                        key,
                        value,
                        dask_export(key, value),
                    )

    said: set[str] = set()
    client_process = os.getpid()
    with ExitStack() as restore:
        for owner, name, replacement in (
            (dask.config, "set", config_set),
            (SpecCluster, "__init__", refuse),
            (Client, "__init__", client_init),
            (Client, "wait_for_workers", wait_for_workers),
            (Client, "shutdown", Client.close),
            (dask_mpi, "initialize", initialize),
            (dask_mpi, "execute", execute),
            (dask_mpi, "send_close_signal", lambda: None),
        ):
            restore.callback(setattr, owner, name, getattr(owner, name))
            setattr(owner, name, replacement)
        ctrl_c = signal.getsignal(signal.SIGINT)

        def keep_ctrl_c() -> None:
            """dask-jobqueue sets Ctrl-C's handler to ``sys.exit()``: as its runner
            module is imported up to 0.9.0 (dask-jobqueue #696), as a runner is made
            since (#697); only in the main thread."""
            if (
                os.getpid() == client_process
                and threading.current_thread() is threading.main_thread()
                and ctrl_c is not None
                and ctrl_c != signal.getsignal(signal.SIGINT)
            ):
                signal.signal(signal.SIGINT, ctrl_c)

        def adopt_runners(runner_module: types.ModuleType) -> None:
            if os.getpid() != client_process:  # a process the script forked: its own
                return
            keep_ctrl_c()
            _runners_join_the_job(runner_module, restore, workers, keep_ctrl_c)

        if _RUNNER_MODULE in sys.modules:
            adopt_runners(sys.modules[_RUNNER_MODULE])
        else:  # imported by the script, if at all: dask-jobqueue costs nothing otherwise
            finder = _OnImport(_RUNNER_MODULE, adopt_runners)
            sys.meta_path.insert(0, finder)
            restore.callback(sys.meta_path.remove, finder)
        yield


#: dask-jobqueue's runners (SLURMRunner and the base of every runner).
_RUNNER_MODULE = "dask_jobqueue.runner"


def _runners_join_the_job(
    module: types.ModuleType, restore: ExitStack, workers: int, keep_ctrl_c: Callable[[], None]
) -> None:
    """A runner created in the script takes the client's role in the job's cluster
    (``BaseRunner._start`` decides the role, then starts a scheduler or worker there),
    and leaves Ctrl-C to the launcher."""
    base = module.BaseRunner
    init = base.__init__

    def made(runner: Any, *args: Any, **kwargs: Any) -> None:
        init(runner, *args, **kwargs)
        keep_ctrl_c()

    async def start(runner: Any) -> None:
        options = {
            "scheduler_options": _without_scheduler_file(runner.scheduler_options),
            "worker_options": _without_scheduler_file(runner.worker_options),
        }
        _ignored(type(runner).__name__, {key: value for key, value in options.items() if value})
        runner.role = module.Role.client
        runner.scheduler_address = dask.config.get("scheduler-address")
        runner.n_workers = workers
        await runner.before_client_start()
        runner.status = Status.running

    for name, replacement in (("__init__", made), ("_start", start)):
        restore.callback(setattr, base, name, getattr(base, name))
        setattr(base, name, replacement)


def _without_scheduler_file(options: Mapping[str, Any]) -> dict[str, Any]:
    """A runner's options, without the scheduler file SLURMRunner adds to them itself."""
    return {key: value for key, value in options.items() if key != "scheduler_file"}


class _OnImport(importlib.abc.MetaPathFinder):
    """Calls ``then(module)`` right after ``name`` has been imported (Python has no
    post-import hook): finds the module with the other finders, and runs ``then`` after
    its loader has run the module's code."""

    def __init__(self, name: str, then: Callable[[types.ModuleType], None]) -> None:
        self.name = name
        self.then = then

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if finder is not self and find else None
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            del loader.exec_module  # the loader's own again (one loader may serve a zip)
            run(module)
            self.then(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


#: dask's schedulers that compute in the calling process, leaving the workers idle.
_LOCAL_SCHEDULERS = {
    "threads",
    "threading",
    "processes",
    "multiprocessing",
    "sync",
    "synchronous",
    "single-threaded",
}

#: Settings read by the workers, nannies and scheduler, which start before the script.
_CLUSTER_KEYS = ("distributed.worker.", "distributed.nanny.", "distributed.scheduler.")


def _cluster_settings(arg: Mapping | None, kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """The settings of one ``dask.config.set`` call that only the cluster reads, as
    dotted keys (nested mappings and ``a__b=`` keywords flattened)."""
    found: list[tuple[str, Any]] = []

    def walk(key: str, value: Any) -> None:
        # A mapping with capitals in its keys (resources named GPU) stays whole: an
        # environment variable can only give those as a dict (launcher/config.py dask_export).
        if isinstance(value, Mapping) and value and all(str(k) == str(k).lower() for k in value):
            for inner, item in value.items():
                walk(f"{key}.{inner}", item)
        elif key.lower().replace("_", "-").startswith(_CLUSTER_KEYS):
            found.append((key, value))

    for key, value in (arg or {}).items():
        walk(str(key), value)
    for key, value in kwargs.items():
        if key not in ("config", "lock"):
            walk(key.replace("__", "."), value)
    return found


def _given(function: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments by name, checked against dask-mpi's own signature (so a wrong one
    fails as it would there)."""
    return dict(inspect.signature(function).bind(*args, **kwargs).arguments)


def _ignored(call: str, given: dict[str, Any]) -> None:
    sizing = {key: value for key, value in given.items() if key not in _NEUTRAL}
    if sizing:
        listed = ", ".join(f"{key}={value!r}" for key, value in sizing.items())
        log.info(
            "%s() in your script: the launcher's cluster is up already; "
            "ignored: %s (set these with launcher flags or config, docs/user-guide.md)",
            call,
            listed,
        )
