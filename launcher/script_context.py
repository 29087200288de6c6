"""The script's surroundings, the same wherever its code runs.

Under plain ``python`` the script and everything it runs share one process, and under
dask-mpi every rank runs the script's first lines; here the workers and the processes
the script starts come from elsewhere, so what they need is handed to them: the
workers get the script's directory, the directories it adds to ``sys.path``, the
variables it sets and the directory it moves to; the processes it starts get the job's
cluster; and whatever any of them prints reaches the job's log line by line.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import dask
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from launcher.config import dask_env_var
from launcher.options import Target
from launcher.security import client_tls_keys

log = logging.getLogger("launcher")


def print_as_it_goes() -> None:
    """Make this process's ``print`` reach the job's log line by line, on the client
    rank for the script and in every worker process for its tasks.

    Under srun and mpirun stdout is a pipe, which Python fills in 8 KiB blocks: a
    script's progress lines showed up only when it ended (in the log after the
    launcher's own lines, which go to stderr, line by line), and a task's after the
    script's last line. Slurm's FAQ answer is ``srun --unbuffered`` or ``python -u``;
    line buffering gives the same order at one write per line, not per call."""
    if not sys.stdout.line_buffering and not sys.stdout.isatty():
        with suppress(AttributeError, ValueError):  # replaced or closed
            sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def worker_prints_once() -> None:
    """``distributed.print`` (and ``distributed.warn``) in a task prints on its worker
    and sends the text to every client, which prints it again. Every process of the job
    prints into the job's log, the worker too (``print_as_it_goes``), so each line came
    out once more for every client of the job's processes: three times for a script
    that makes its own ``Client()`` beside the launcher's. Clients made in this process
    from now on leave those topics alone; a client in another process (a notebook kernel
    the script started) still subscribes. distributed's ``Client._default_event_handlers``
    is what a new client subscribes to."""
    Client._default_event_handlers = {}


def start_method_left_to_the_script() -> None:
    """multiprocessing's default start method is the script's to choose, as under python.

    CPython fixes it while it prepares a child started through a fork server
    (``spawn.get_preparation_data`` asks ``get_start_method()``), and in one process (no
    mpirun) the nanny starts its worker that way before the script runs: the script's
    own ``multiprocessing.set_start_method("spawn")`` at its top, as PyTorch scripts
    have, raised "context has already been set". The launcher never relies on the
    default: its nannies name their method in Dask's config.
    """
    multiprocessing.set_start_method(None, force=True)


def children_find_the_cluster() -> None:
    """Processes the script starts get the job's cluster in their environment, so that
    ``Client()`` in them connects to it.

    The launcher hands the address and credentials to the script through Dask's config
    in this process, which no child sees: a Jupyter server run as the target
    (``-m jupyterlab``) started kernels whose ``Client()`` made a ``LocalCluster`` on the
    client rank's cores beside the idle workers, and so did a script started with
    ``subprocess`` (with TLS, no client could have connected without the credentials).
    The environment of the user's own processes is readable by the user and root
    only, like their memory."""
    # The address and, under TLS, the run's client settings: PEM text, which
    # distributed accepts in place of file names.
    for key in ("scheduler-address", *client_tls_keys()):
        value = dask.config.get(key, None)
        if value is not None:
            os.environ[dask_env_var(key)] = str(value)


def import_beside_the_script(target: Target) -> None:
    """Put the script's directory first on ``sys.path``, as ``python script.py`` does:
    on the client rank for the script, and on every worker rank too.

    A function the script imports from a module beside it reaches the workers pickled
    by reference, and they import that module to unpickle it. Under plain ``python``
    and under dask-mpi, where every rank runs the script, that directory is first on
    every rank's ``sys.path``; here the workers run the launcher, so it is put there
    (before the nanny's worker process starts, which gets the nanny's ``sys.path``).
    Without it such a task closed every worker it reached and the job hung.
    """
    if target.kind == "script":
        path = os.path.abspath(target.name)
        sys.path.insert(
            0, path if os.path.isdir(path) or zipfile.is_zipfile(path) else os.path.dirname(path)
        )


@dataclass(frozen=True)
class _ScriptSetup:
    """What the script changed in ``sys.path``, ``os.environ`` and its working
    directory, to be done again in another process."""

    front: tuple[str, ...] = ()  # directories it put before the ones it found
    back: tuple[str, ...] = ()  # and after them
    environ: tuple[tuple[str, str], ...] = ()  # variables it set
    unset: tuple[str, ...] = ()  # and deleted
    cwd: str | None = None  # where it went with os.chdir
    script_process: int = field(default_factory=os.getpid)

    def apply(self) -> None:
        """Do it here, unless here is the script's own process (a scheduler or worker
        sharing it: the compact layout, one process), where it is done already and the
        script may have changed it again meanwhile."""
        if os.getpid() == self.script_process:
            return
        sys.path[:0] = [entry for entry in self.front if entry not in sys.path]
        sys.path.extend(entry for entry in self.back if entry not in sys.path)
        os.environ.update(self.environ)
        for name in self.unset:
            os.environ.pop(name, None)
        if self.cwd is not None:
            with suppress(OSError):  # not on this node: relative paths stay as they were
                os.chdir(self.cwd)


class _OnWorkers(WorkerPlugin):
    """On every worker, and on every worker started later (a restart, a new process)."""

    name = "launcher-script-setup"

    def __init__(self, setup: _ScriptSetup) -> None:
        self.script_setup = setup

    def setup(self, worker: Any) -> None:
        self.script_setup.apply()


class _OnScheduler(SchedulerPlugin):
    """On the scheduler, which unpickles the graphs (on a rank of its own in the
    dedicated layout)."""

    name = "launcher-script-setup"

    def __init__(self, setup: _ScriptSetup) -> None:
        self.script_setup = setup

    async def start(self, scheduler: Any) -> None:
        self.script_setup.apply()


class _ScriptChanges:
    """``sys.path``, ``os.environ`` and the working directory as the script found them,
    and what it changed."""

    def __init__(self) -> None:
        self.path = [os.path.abspath(entry) for entry in sys.path]
        self.environ = dict(os.environ)
        self.cwd = os.getcwd()
        self._last_look = self._look()

    @staticmethod
    def _look() -> tuple[list[str], dict[bytes, bytes], str]:
        # os.environ's own dict: comparing os.environ itself decodes every variable,
        # 20 us a submission with 40 variables (more after module loads), this 0.3 us.
        return list(sys.path), dict(os.environ._data), os.getcwd()  # type: ignore[attr-defined]

    def since_last_look(self) -> bool:
        path, environ, cwd = self._last_look
        if sys.path == path and os.environ._data == environ and os.getcwd() == cwd:  # type: ignore[attr-defined]
            return False
        self._last_look = self._look()
        return True

    def setup(self) -> _ScriptSetup:
        now = list(dict.fromkeys(os.path.abspath(entry) for entry in sys.path))
        first = next((now.index(entry) for entry in self.path if entry in now), len(now))
        added = [(i, entry) for i, entry in enumerate(now) if entry not in self.path]
        environ = dict(os.environ)
        return _ScriptSetup(
            tuple(entry for i, entry in added if i < first),
            tuple(entry for i, entry in added if i > first),
            tuple((k, v) for k, v in environ.items() if self.environ.get(k) != v),
            tuple(name for name in self.environ if name not in environ),
            None if os.getcwd() == self.cwd else os.getcwd(),
        )


@contextmanager
def workers_follow_the_script() -> Iterator[None]:
    """While inside, what the script adds to ``sys.path``, sets in ``os.environ`` and
    where it goes with ``os.chdir`` reach the workers before the next work it sends
    them.

    Scripts start with ``sys.path.insert(0, "../src")`` to import their own code, or
    ``os.environ["HDF5_USE_FILE_LOCKING"] = "FALSE"`` for the files their tasks open, or
    ``os.chdir(os.path.dirname(__file__))`` so that relative paths find their data.
    Under dask-mpi every rank runs those lines before ``initialize()``, and a
    ``LocalCluster``'s workers start after them; here the workers had started before
    the script, so they could not unpickle a function from ../src (distributed #1341:
    every worker closed and the job failed), opened the files without the variable, or
    did not find them. So each submission (``Client._graph_to_futures``, behind submit,
    map, compute, persist and ``dask.compute``) and each ``client.run`` first looks for
    changes, and on one registers plugins that make them on the scheduler (which
    unpickles the graphs) and on the workers, waiting for them, so the work that needs
    them comes after. An asynchronous client cannot wait there and is left as it was."""
    changes = _ScriptChanges()
    sent = _ScriptSetup()
    replacing = False

    def first_pass_on(original: Callable[..., Any]) -> Callable[..., Any]:
        def sending(client: Client, *args: Any, **kwargs: Any) -> Any:
            nonlocal sent, replacing
            if not client.asynchronous and changes.since_last_look():
                setup = changes.setup()
                if setup != sent:
                    sent = setup
                    try:
                        if replacing:  # distributed warns of a taken scheduler plugin name
                            client.unregister_scheduler_plugin(_OnScheduler.name)
                        client.register_plugin(_OnScheduler(setup))
                        replacing = True
                        client.register_plugin(_OnWorkers(setup))
                    except Exception as err:  # the user's call goes on
                        # A worker closing meanwhile fails the broadcast; the scheduler
                        # keeps the plugin for the others and for workers started later.
                        log.warning("passing the script's changes to the workers: %s", err)
            return original(client, *args, **kwargs)

        return sending

    with ExitStack() as restore:
        for name in ("_graph_to_futures", "run"):
            original = getattr(Client, name)
            restore.callback(setattr, Client, name, original)
            setattr(Client, name, first_pass_on(original))
        yield
