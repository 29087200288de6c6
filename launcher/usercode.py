"""Run the user's script or module as ``__main__``, the way ``python`` itself would.

The exit status follows Python's own rules (0, 1 after an uncaught exception,
``n`` for ``sys.exit(n)``) so that the job ends with what the script meant. And what
Python does as it exits happens before the job ends, since the launcher's process ends
without Python's exit: the script's threads are waited for, its exit functions run, its
processes are waited for and what it dropped is finalized; ``os._exit`` ends the job in
order. The workers and the processes the script starts share its surroundings
(launcher/script_context.py).
"""

from __future__ import annotations

import atexit
import gc
import importlib.util
import logging
import multiprocessing
import os
import pkgutil
import runpy
import sys
import threading
import time
import traceback
import types
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures.process import _python_exit as shut_down_process_pools
from concurrent.futures.thread import _threads_queues
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NoReturn

from launcher import interrupt, script_context, user_clusters
from launcher.interrupt import Interrupted
from launcher.options import Target
from launcher.script_context import (
    children_find_the_cluster,
    import_beside_the_script,
    print_as_it_goes,
    start_method_left_to_the_script,
    workers_follow_the_script,
)
from launcher.worker import WORKER_PROCESS_NAME

#: Frames of these files are the launcher's, not the user's, in a traceback.
_INTERNAL_FILES = {
    "<frozen runpy>",
    runpy.__file__,
    __file__,
    interrupt.__file__,
    script_context.__file__,
    user_clusters.__file__,
}


def check_target(target: Target) -> str | None:
    """Why the target cannot run (missing, or not valid Python), before any cluster starts.

    A syntax error is reported with Python's own traceback format.
    """
    if target.kind == "command":
        return _syntax_error(target.name, "<string>")
    if target.kind == "script":
        path = Path(target.name)
        if target.name == "-":
            return (
                "launcher: a script from standard input ('-') is not supported (only one "
                "rank reads it): save it to a file and give its path, or use -c"
            )
        if not path.exists():
            return (
                f"launcher: can't open file {str(path.absolute())!r}: no such file "
                "(give the script's path relative to the working directory, or absolute)"
            )
        if path.is_file() and path.suffix == ".ipynb":
            return (
                f"launcher: {path} is a Jupyter notebook, not a Python script: run it with "
                f"'-m nbconvert --to notebook --execute {path}' (pip install nbconvert "
                f"ipykernel; the outputs go to {path.with_suffix('.nbconvert.ipynb')}), or "
                f"export it with 'jupyter nbconvert --to script {path}' and run the .py file"
            )
        if path.is_file() and not zipfile.is_zipfile(path):
            source = path.read_bytes()
            if source.startswith(importlib.util.MAGIC_NUMBER):
                return None  # compiled code (``python script.pyc``), which runpy runs too
            return _syntax_error(source, str(path))
        # A directory or zip file with a __main__.py, as python runs it.
        importer = pkgutil.get_importer(str(path))
        spec = importer.find_spec("__main__") if importer is not None else None
        if spec is None or spec.loader is None:
            return f"launcher: can't find '__main__' module in {str(path.absolute())!r}"
        source = spec.loader.get_source("__main__")  # type: ignore[attr-defined]
        return None if source is None else _syntax_error(source, spec.origin or str(path))
    try:
        spec = importlib.util.find_spec(target.name)
    except (ImportError, ValueError) as err:
        return f"launcher: error finding module {target.name!r}: {err}"
    if spec is None:
        return (
            f"launcher: no module named {target.name!r} (is it installed in this "
            f"Python, {sys.executable}?)"
        )
    return None


def _syntax_error(source: str | bytes, filename: str) -> str | None:
    try:
        compile(source, filename, "exec")
    except (SyntaxError, ValueError) as err:
        return "".join(traceback.format_exception_only(type(err), err)).rstrip()
    return None


def exit_status(exc: SystemExit) -> int:
    """Python's rules for ``sys.exit(x)``: None → 0, int → itself, else print it and 1."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def print_user_traceback(exc: BaseException) -> None:
    """Print the traceback the user would see under plain ``python``: no launcher frames."""
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if frame.filename not in _INTERNAL_FILES]
    )
    print("".join(report.format()), end="", file=sys.stderr, flush=True)


@contextmanager
def hard_exits_end_the_job(end_job: Callable[[int], NoReturn]) -> Iterator[None]:
    """While inside, ``os._exit(n)`` in this process ends the job in order, with n.

    Scripts written for dask-mpi end with it, to get past the hangs at the end of
    dask-mpi jobs (dask-mpi #87, distributed #8644). Here it ended the client rank
    without a word to the others: mpirun then killed them and failed the job ("BAD
    TERMINATION", exit 9), and under srun they waited 20 s for the client rank's
    heartbeat and failed it, both without a summary. So the call closes the cluster as
    the script's end does, writes the summary and exits with n, running none of the
    script's code after it, as ``os._exit`` would not. Processes the script forks call
    the real one.
    """
    original, launcher_process = os._exit, os.getpid()

    def hard_exit(status: int) -> NoReturn:
        if os.getpid() != launcher_process:
            original(status)
        os._exit = original  # the launcher's own ending may need it
        end_job(status)

    os._exit = hard_exit
    try:
        yield
    finally:
        os._exit = original


def run_target(target: Target) -> tuple[int, dict[str, Any]]:
    """Run the target as ``__main__`` in this (the main) thread, then wait for the
    threads it started, run the exit functions it registered and wait for the processes
    it started, as ``python`` does before it exits; return its exit status and its
    global namespace.

    The caller keeps that namespace until it has closed the job's clients, and then
    passes it to ``finalize``: Python, too, clears ``__main__`` only after its exit
    functions, distributed's among them, which closes the clients. Freed as the script
    returned, every future it still held (``futures = client.map(f, items)`` at its top
    level) sent the scheduler a message of its own: 3 s after a script that kept
    50,000, before the job could end."""
    print_as_it_goes()
    children_find_the_cluster()
    start_method_left_to_the_script()
    threads, finalizers = set(threading.enumerate()), _registered_finalizers()
    with _exit_functions() as (at_exit, before_threads_join), _main_namespace_caught() as caught:
        status = _exit_status_of(lambda: _run_main(target))
        # Last: the shutdown of the script's ProcessPoolExecutors, once their queued
        # work is done, which concurrent.futures registered there as the launcher
        # imported it. The thread that runs a pool is no daemon, and a pool left open
        # kept the job until its walltime.
        before_threads_join.insert(0, (shut_down_process_pools, (), {}))
        waited = _run_exit_functions(before_threads_join) or _exit_status_of(
            lambda: _join_threads(_threads_started_since(threads))
        )
    status = _run_exit_functions(at_exit) or waited or status
    status = _exit_status_of(lambda: _join_processes(_processes_left(finalizers))) or status
    return status, caught[0] if caught else {}


def finalize(namespace: dict[str, Any], timeout: float) -> None:
    """Free what the script left, as Python's exit would: its open files are flushed
    and closed, a multiprocessing Pool's semaphores unlinked (without it
    multiprocessing's resource tracker warned of "leaked semaphore objects").

    The namespace is cleared, as Python's exit clears ``__main__``, so that its objects
    go one by one. Left to the garbage collector (the functions a script defines hold
    its namespace in a reference cycle) they went in any order, and a file the script
    wrote and never closed came out empty: its raw file was closed before the buffer
    above it was flushed.

    Within ``timeout``, then the job ends without it: a finalizer that never returns
    kept the job's end until the other ranks gave up (MPI_Abort, a job that failed).
    A multiprocessing Pool whose worker process died holding the lock of the pool's
    task queue waits for that lock forever as it is freed (CPython #96062), and the
    signal that ends a job (scancel, Ctrl-C) reaches the script's processes too. Then
    the daemonic processes the script started are ended, as Python's exit ends them:
    a ``Process(daemon=True)`` left running held mpirun's output, and so the job's
    end, for as long as it ran."""
    freeing = threading.Thread(
        target=_free, args=(namespace,), name="launcher-finalize", daemon=True
    )
    freeing.start()
    freeing.join(timeout)
    if freeing.is_alive():
        logging.getLogger("launcher").warning(
            "freeing what your script left did not end within %g s (waiting in %s); "
            "the job ends without it",
            timeout,
            _innermost_call(freeing),
        )
    daemons = [process for process in _script_processes() if process.daemon]
    for process in daemons:  # all at once, then waited for, as Python's exit does
        process.terminate()
    deadline = time.monotonic() + 1
    for process in daemons:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():  # deaf to SIGTERM
            process.kill()
            process.join()


def _free(namespace: dict[str, Any]) -> None:
    namespace.clear()
    gc.collect()


def _innermost_call(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None:
        return "no frame"
    call = traceback.extract_stack(frame)[-1]
    return f"{call.name}, {call.filename}:{call.lineno}"


@contextmanager
def _main_namespace_caught() -> Iterator[list[dict[str, Any]]]:
    """While inside, the namespace the target runs in is caught as its top level
    starts, by a profile hook that removes itself there.

    runpy runs a script or module in a module of its own and returns a copy of its
    namespace (nothing when the script raises), while the functions the script defines
    hold the module's own."""
    caught: list[dict[str, Any]] = []

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if (
            event == "call"
            and frame.f_code.co_name == "<module>"
            and frame.f_globals.get("__name__") == "__main__"
        ):
            sys.setprofile(None)
            caught.append(frame.f_globals)

    sys.setprofile(profile)
    try:
        yield caught
    finally:
        if sys.getprofile() is profile:  # the target never started
            sys.setprofile(None)


def _run_main(target: Target) -> None:
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    try:
        sys.argv = ["-c" if target.kind == "command" else target.name, *target.argv]
        import_beside_the_script(target)
        with workers_follow_the_script():
            if target.kind == "script":
                runpy.run_path(target.name, run_name="__main__")
            elif target.kind == "command":
                _run_command(target.name)
            else:
                runpy.run_module(target.name, run_name="__main__", alter_sys=True)
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.stdout.flush()


def _run_command(code: str) -> None:
    """``python -c``: the code runs as the ``__main__`` module, its frames in "<string>"."""
    main = types.ModuleType("__main__")
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = main
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)
    finally:
        sys.modules["__main__"] = saved


#: Seconds after the script's end before the threads it still runs are named.
NOTICE_AFTER = 5.0


def _threads_started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Python joins every non-daemon thread before it exits, so a script may end while
    its background thread still computes or writes results; the job's end would have
    cut that thread off, its output lost. (Executors' worker threads are left out:
    Python's exit stops them, and so does the job's end.)"""
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before and not thread.daemon and thread not in _threads_queues
    ]


def _join_threads(threads: list[threading.Thread]) -> None:
    """Join the threads the script left running, as Python does before it exits.

    One that never ends (a monitoring loop) keeps the job until its walltime, as it
    keeps ``python script.py`` from exiting, and the log showed nothing after the
    script's last line: after a few seconds one line names those waited for."""
    _wait_for(
        threads,
        "threads",
        "non-daemon threads",
        "started with daemon=True, a thread does not keep the job",
    )


#: Of the finalizers that multiprocessing's exit function runs before it joins the child
#: processes (priority 0 and up), those that only end what they belong to: a Manager's
#: shutdown, and the unlinking of a semaphore's name (multiprocessing's and joblib's
#: loky's, whose resource tracker otherwise warned of "leaked semlock objects" after the
#: summary of every job whose script had called joblib.Parallel). Others of that priority
#: are left: a Pool's is run by freeing the script's namespace (``finalize``, bounded),
#: and a queue's close (the nanny's too, in one process) is not needed to end the job.
_FINALIZED_AT_EXIT = {"BaseManager._finalize_manager", "SemLock._cleanup"}


def _registered_finalizers() -> set[tuple[Any, ...]]:
    return set(multiprocessing.util._finalizer_registry)


def _processes_left(before: set[tuple[Any, ...]]) -> list[BaseProcess]:
    """The script's processes that Python's exit would wait for, once it has finalized
    what the script left (``_FINALIZED_AT_EXIT``, registered since it started).

    multiprocessing's exit function first runs the finalizers of priority 0 and up (a
    Manager's shutdown), then joins every child process that is no daemon. Left running
    as the job ended, under srun such a process was killed by the end of the job step
    while it still wrote its results (measured: its file never appeared); an open
    Manager is one, which only its finalizer ends. The daemonic ones are ended by
    ``finalize``, as the job ends."""
    registry = multiprocessing.util._finalizer_registry
    due = [key for key in set(registry) - before if key[0] is not None and key[0] >= 0]
    for key in sorted(due, reverse=True):  # Python's order
        finalizer = registry.get(key)
        callback = getattr(finalizer, "_callback", None)
        if finalizer and getattr(callback, "__qualname__", None) in _FINALIZED_AT_EXIT:
            finalizer()
    return [process for process in _script_processes() if not process.daemon]


def _script_processes() -> list[BaseProcess]:
    """This process's multiprocessing children but the nanny's worker process (one
    process: the nanny shares the script's process and ends its worker itself)."""
    return [p for p in multiprocessing.active_children() if p.name != WORKER_PROCESS_NAME]


def _join_processes(processes: list[BaseProcess]) -> None:
    _wait_for(
        processes,
        "processes",
        "the processes it started",
        "join them, or start them with daemon=True to have them ended at the job's end",
    )


def _wait_for(
    running: list[threading.Thread] | list[BaseProcess], what: str, python_waits: str, hint: str
) -> None:
    """Join ``running``; after a few seconds one line names those still waited for."""
    deadline = time.monotonic() + NOTICE_AFTER
    for each in running:  # a signal still interrupts the joins
        each.join(max(0.0, deadline - time.monotonic()))
    if waiting := [repr(each.name) for each in running if each.is_alive()]:
        logging.getLogger("launcher").warning(
            "your script has ended, and the job waits for its %s %s to end, as Python "
            "waits for %s before it exits (%s)",
            what,
            ", ".join(waiting),
            python_waits,
            hint,
        )
    for each in running:
        each.join()


_ExitFunction = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


@contextmanager
def _exit_functions() -> Iterator[tuple[list[_ExitFunction], list[_ExitFunction]]]:
    """While inside, ``atexit.register`` collects into the first list it yields, and
    ``threading._register_atexit`` into the second: what Python calls before it joins
    the threads at its exit.

    The launcher's process ends without Python's own exit (launcher/bootstrap.py,
    ``end_process``), so the exit functions of the script (``atexit.register(save)``)
    and of the libraries it imported never ran, and what they save was lost. These run
    when the script's code and threads are done, while the cluster is still up, as they
    would under dask-mpi, whose cluster closes in an exit function registered before.
    Executors register before the threads join, to shut down (joblib's loky as it
    starts its first pool): without it, a script that had called joblib.Parallel kept
    the job waiting for loky's manager thread, no daemon, until its walltime."""
    at_exit: list[_ExitFunction] = []
    before_threads_join: list[_ExitFunction] = []
    original_register, original_unregister = atexit.register, atexit.unregister
    original_threading_register = threading._register_atexit  # type: ignore[attr-defined]

    def register(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        at_exit.append((function, args, kwargs))
        return function

    def unregister(function: Callable[..., Any]) -> None:
        at_exit[:] = [entry for entry in at_exit if entry[0] != function]
        original_unregister(function)

    def register_before_threads_join(
        function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        before_threads_join.append((function, args, kwargs))

    atexit.register, atexit.unregister = register, unregister
    threading._register_atexit = register_before_threads_join  # type: ignore[attr-defined]
    try:
        yield at_exit, before_threads_join
    finally:
        atexit.register, atexit.unregister = original_register, original_unregister
        threading._register_atexit = original_threading_register  # type: ignore[attr-defined]


def _run_exit_functions(registered: list[_ExitFunction]) -> int:
    """Last registered first; an error is printed and the rest still run, as Python
    does, while an interrupt (the job is ending) stops them with its exit status."""
    for function, args, kwargs in reversed(registered):
        try:
            function(*args, **kwargs)
        except Interrupted as exc:
            print_user_traceback(exc)
            return exc.exit_status
        except BaseException as exc:
            print(f"Exception ignored in atexit callback {function!r}:", file=sys.stderr)
            print_user_traceback(exc)
    sys.stdout.flush()
    return 0


def _exit_status_of(code: Callable[[], None]) -> int:
    """Python's exit status for user code, its traceback printed as python would."""
    try:
        code()
    except SystemExit as exc:
        return exit_status(exc)
    except Interrupted as exc:
        print_user_traceback(exc)
        return exc.exit_status
    except KeyboardInterrupt as exc:
        print_user_traceback(exc)
        return 130
    except BaseException as exc:
        print_user_traceback(exc)
        return 1
    return 0
