"""``python -m launcher``: from a command line to a running plan, on every rank.

Every rank parses the same argv and reads the same config, so every rank reaches the
same verdict on bad input without talking; only one of them prints it. Host facts are
gathered on rank 0, which plans for everyone and broadcasts the plan (or the reason
there is none). Nothing is started before the plan exists, so bad input never leaves a
half-started cluster.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, NoReturn

from launcher.interrupt import hold_signals
from launcher.mpienv import (
    diagnose_launcher,
    diagnose_world,
    intended_rank,
    leave_mpi_job,
)
from launcher.options import EarlyExit, Options, UsageError, parse

#: Exit status when nothing was started because the input or environment is wrong.
BAD_INPUT = 2


class Stop(Exception):
    """End this rank now with ``status``; the speaking rank prints ``message``."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def process_start_time() -> float:
    """When this process started (epoch seconds): start-up is measured from there.

    Not psutil's ``create_time``: it adds the boot time from /proc/stat, which is whole
    seconds, so it is up to 1 s early (0.77 s on this test machine) and the summary's
    start-up was that much too long, sometimes longer than the whole job. The kernel
    counts a process's start in clock ticks since boot, as ``CLOCK_BOOTTIME`` does.
    """
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    except OSError:  # no /proc (not Linux): psutil's is the best there is
        import psutil

        return psutil.Process().create_time()
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - age


def _under_mpi_launcher(env: Mapping[str, str]) -> bool:
    names = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_STEP_NUM_TASKS")
    return any(name in env for name in names)


#: MPICH waits in MPI_Init for the last rank, and in its other blocking calls, by
#: polling: a rank that arrives first burns a core until the last one does (2.0 s of
#: CPU for a 2-s wait, measured): on a node with more ranks than cores, CPU that the
#: late ranks need; anywhere, seconds of a busy core per rank when some ranks import
#: from a slow shared file system.
#: With heavy yield the polling thread sleeps between polls: 0.2 s of CPU for the same
#: wait, and 32 ranks on 2 cores had their cluster ready 1.2 s sooner (3 interleaved
#: runs each; at 4 ranks the difference is within the noise). The launcher's own waits
#: sleep already (launcher/comm.py). MPICH reads it in MPI_Init; a value already in the
#: environment (the user's, the site's) wins; libraries that do not know it ignore it.
MPI_ENVIRONMENT = {"MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"}


def connect_mpi(env: Mapping[str, str], timeout: float) -> tuple[Any, str]:
    """MPI's world communicator and library description; a world of one without MPI.

    MPI is initialised here, not at import, so that a launcher the library cannot join
    is reported in one clear line instead of an abort inside MPI_Init, and one that
    never lets MPI_Init return ends the job after ``timeout`` (launcher/initwatch.py).
    """
    for name, value in MPI_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        import mpi4py

        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = False  # end_process finalizes, then exits
        from mpi4py import MPI
    except Exception as err:  # mpi4py present but no MPI library it can load
        if _under_mpi_launcher(env):
            raise Stop(BAD_INPUT, f"launcher: mpi4py cannot load an MPI library: {err}") from None
        from launcher.comm import SoloComm

        return SoloComm(), "no MPI library (single process)"
    library = MPI.Get_library_version()
    problem = diagnose_launcher(env, library)
    if problem:
        raise Stop(BAD_INPUT, f"launcher: {problem}")
    from launcher.initwatch import watch_mpi_init

    # A single process has nobody to wait for in MPI_Init.
    returned = watch_mpi_init(timeout, intended_rank(env)) if _under_mpi_launcher(env) else None
    MPI.Init_thread(MPI.THREAD_MULTIPLE)
    if returned is not None:
        returned()
    return MPI.COMM_WORLD, library


def end_process(status: int) -> NoReturn:
    """Finalize MPI and exit without Python's interpreter teardown.

    Teardown joins every non-daemon thread, and distributed can leave some that never
    finish (distributed #8644), so ``sys.exit`` may hang. ``os._exit`` is no better under
    MPICH: its PMI connection is closed by a C ``atexit`` handler, and a process that
    skips it looks crashed to hydra, which then SIGKILLs the other ranks (exit code 9).
    C's ``exit()`` runs those handlers but not Python's teardown.

    Only one rank (the client rank, or rank 0 for errors before the cluster) carries the
    job's exit status; the others exit 0. Launchers end or misreport a job when a rank
    exits non-zero while others still run (hydra kills them, ``srun
    --kill-on-bad-exit`` cancels them and reports the signal), so the carrier exits a
    moment after MPI_Finalize, once the others are gone; the status that reaches
    mpirun/srun is then the carrier's. Ranks that stop before MPI_Init (a wrong
    launcher) have met nowhere and may be tenths of a second apart: it waits longer.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    watchdog = threading.Timer(10.0, os._exit, (status,))
    watchdog.daemon = True
    watchdog.start()
    from launcher.forkserver import stop_worker_helpers

    stop_worker_helpers()
    mpi = sys.modules.get("mpi4py.MPI")
    met = mpi is not None and mpi.Is_initialized()
    if met and not mpi.Is_finalized():
        mpi.Finalize()
    if status != 0:
        time.sleep(0.2 if met else 1.0)
    ctypes.CDLL(None).exit(status)
    os._exit(status)  # not reached


def set_dask_log_level(verbose: int) -> None:
    """Through the environment, which distributed reads when it is imported: worker
    processes and a nanny's fork server see it in time, whatever started them."""
    levels = {0: "error", 1: "info"}
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", levels.get(verbose, "debug"))


def keep_dask_logs_in_memory() -> None:
    """What reaches stderr from distributed is the level set above; what its servers
    keep in memory is INFO and up, as under a LocalCluster.

    A scheduler, worker and nanny each keep their recent log records, which
    ``client.get_worker_logs()``, ``get_scheduler_logs()`` and the dashboard's log pages
    show, and which distributed's KilledWorker message sends users to. With the
    ``distributed`` logger itself at ERROR they held errors only: not why a worker's
    process was restarted (over 95% of its memory), nor the "unmanaged memory" and
    "event loop was unresponsive" warnings. So the level goes on distributed's stderr
    handler instead of its logger. In a worker process forked from its rank (as from
    the fork server) this is inherited."""
    level = logging.getLevelName(os.environ["DASK_LOGGING__DISTRIBUTED"].upper())
    if not isinstance(level, int):
        return  # a level logging does not know: distributed's own handling stands
    dask_logger = logging.getLogger("distributed")
    for handler in dask_logger.handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(level)
    dask_logger.setLevel(min(level, logging.INFO))


def configure_logging(verbose: int) -> None:
    """Quiet unless asked: our own lines always, Dask's from -v on."""
    ours = logging.getLogger("launcher")
    if ours.handlers:
        return  # configured already, before MPI_Init (see prepare_before_mpi)
    set_dask_log_level(verbose)
    from launcher.config import set_distributed_defaults
    from launcher.speedups import import_distributed

    import_distributed()  # which installs the handlers we adjust
    set_distributed_defaults()  # now that distributed's own are in

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("launcher: %(message)s"))
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    keep_dask_logs_in_memory()
    if verbose == 0:
        logging.getLogger("asyncio").addFilter(_drop_interrupted_gather)
        logging.getLogger("tornado.application").addFilter(_drop_sync_cancel_race)


def prepare_before_mpi(options: Options, env: Mapping[str, str]) -> None:
    """The slow import, before MPI_Init, on every rank at once; then, on a rank that
    will run a nanny, its fork server, which must come before MPI_Init (see
    launcher/forkserver.py).

    Ranks that wait in a collective busy-poll (Open MPI: 5.0 s of CPU for a 5-s
    barrier), and so do MPICH's in MPI_Init unless told to sleep (MPI_ENVIRONMENT;
    Open MPI's MPI_Init sleeps): a rank that imported distributed after MPI_Init while
    others had done so before could keep them spinning, which on a node with a rank on
    every core (or more) takes CPU from the ranks that have work. So every rank does
    the same before MPI_Init. A wrong guess about the roles, or a
    config error reported later by one rank, only costs speed.

    Before mpi4py loads the MPI library, too: worker processes forked from a process
    that has MPICH (and its UCX) loaded cost more CPU. Measured: 32 ranks on 2 cores
    took 16.0 s and 31.5 s of CPU when the library was loaded first, 13.6 s and 26.7 s
    when not, so a wrong launcher is reported only after this import.

    The same under Slurm's own PMI server (``srun --mpi=pmi2``): ranks that entered
    MPI_Init fresh there, and imported distributed after it, made a 3-node job take
    7.2 s instead of 3.8 s on the test Slurm (15 jobs each, none failed MPI_Init).
    """
    from launcher.config import ConfigError, read_settings
    from launcher.plan import hosts_a_nanny, is_a_worker_rank

    try:
        settings = read_settings()
    except ConfigError:
        return
    set_dask_log_level(options.verbose)
    nanny = hosts_a_nanny(env, options, settings)
    if is_a_worker_rank(env, options, settings):  # the user's code's rank: left as is
        from launcher.forkserver import set_worker_environment, trim_freed_memory

        set_worker_environment()  # before the import below loads numpy
        if not nanny:
            # The rank is the worker: distributed applies these only as a nanny starts
            # its worker process, and under --no-nanny (dask worker's and dask-mpi's
            # too) every worker ran a BLAS thread per core of the node.
            trim_freed_memory()
    configure_logging(options.verbose)
    if nanny:
        from launcher.forkserver import start_worker_helpers

        start_worker_helpers(fork_server=True)  # before any thread is started


def _drop_interrupted_gather(record: logging.LogRecord) -> bool:
    """An interrupted ``compute()`` leaves distributed's gather task failed with its
    internal AllExit, which asyncio reports as "Task exception was never retrieved"."""
    return "AllExit" not in record.getMessage()


def _drop_sync_cancel_race(record: logging.LogRecord) -> bool:
    """An interrupt (launcher.Interrupted) that lands in distributed's ``utils.sync``
    before its coroutine has started makes the ``cancel`` callback read ``future``,
    which sync only annotates (the None check added in dask/distributed#5758 cannot
    work then), and tornado logs the NameError with its traceback. The interrupt
    itself is reported already."""
    error = record.exc_info[1] if record.exc_info else None
    return not (isinstance(error, NameError) and "sync.<locals>.cancel" in record.getMessage())


def startup_timeout(options: Options | None) -> float:
    """Before the plan exists: how long to wait for the other ranks (the flag, else the
    config, else the package's default if the config is broken, which is reported
    once MPI is up)."""
    if options is not None and options.startup_timeout is not None:
        return options.startup_timeout
    from launcher.config import PACKAGE_DEFAULTS, ConfigError, read_settings

    try:
        return read_settings()["startup-timeout"].value
    except ConfigError:
        return PACKAGE_DEFAULTS["launcher"]["startup-timeout"]


def _plan_or_reason(
    options: Options, settings: Any, facts: list, env: Mapping[str, str], size: int
) -> tuple[Any, Stop | None]:
    """Rank 0's half of planning: the plan, or why there is none."""
    import dask.config

    from launcher.plan import DISTRIBUTED_SETTINGS, PlanError, PlanInputs, make_plan
    from launcher.slurm import SlurmEnvError, read_allocation
    from launcher.usercode import check_target

    if options.target.kind != "demo" and not options.plan:
        problem = check_target(options.target)
        if problem:
            status = 1 if problem.startswith(("  File", "SyntaxError")) else BAD_INPUT
            return None, Stop(status, problem)
    try:
        hosts = tuple(f.hostname for f in facts)
        gpus = tuple(f.gpus for f in facts)
        source = "MPI"
        alloc = read_allocation(env)
        if size == 1 and options.plan and alloc and (alloc.tasks or 1) > 1:
            nodes = alloc.rank_nodes()
            hosts = tuple(nodes) if len(nodes) == alloc.tasks else hosts * alloc.tasks
            gpus *= len(hosts)
            source = "env SLURM_STEP_NUM_TASKS/SLURM_NTASKS (planned; not started under MPI)"
        run_id = "-".join(filter(None, [alloc.job_id if alloc else None, secrets.token_hex(3)]))
        plan = make_plan(
            PlanInputs(
                env=dict(env),
                rank_hosts=hosts,
                facts={f.hostname: f for f in facts},
                settings=settings,
                options=options,
                run_id=run_id,
                cwd=os.getcwd(),
                mpi_size_source=source,
                rank_gpus=gpus,
                distributed={key: dask.config.get(key, None) for key in DISTRIBUTED_SETTINGS},
            )
        )
    except (PlanError, SlurmEnvError) as err:
        return None, Stop(BAD_INPUT, f"launcher: {err}")
    return plan, None


def _credentials(plan: Any) -> dict[str, str] | None:
    """Rank 0 makes the run's TLS credentials; they travel with the plan, over MPI."""
    if plan is None or plan.protocol != "tls":
        return None
    from launcher.security import make_credentials

    return make_credentials()


def run(argv: list[str], env: Mapping[str, str]) -> int:
    started = process_start_time()
    try:
        options: Options | None = parse(argv)
        early: Stop | None = None
    except UsageError as err:
        options, early = None, Stop(err.status, err.message.rstrip())
    except EarlyExit as err:
        options, early = None, Stop(0, err.message.rstrip())
    if options is not None and options.check:  # connects MPI itself, reporting what fails
        from launcher.preflight import preflight

        return preflight(options, env)
    if options is not None and not options.plan:
        hold_signals()
        prepare_before_mpi(options, env)

    timeout = startup_timeout(options)
    world, library = connect_mpi(env, timeout)
    size, rank = world.Get_size(), world.Get_rank()
    speaker = rank == 0 and (size > 1 or intended_rank(env) == 0)

    def stop(reason: Stop) -> int:
        """One rank says why and carries the exit status; see end_process."""
        if not speaker:
            return 0
        if reason.message:
            print(reason.message, file=sys.stdout if reason.status == 0 else sys.stderr)
        return reason.status

    if early is not None:
        return stop(early)
    assert options is not None
    if not options.plan:
        problem = diagnose_world(env, size, library)
        if problem:
            return stop(Stop(BAD_INPUT, f"launcher: {problem}"))

    configure_logging(options.verbose)
    from launcher.config import ConfigError, read_settings

    try:
        settings = read_settings()
    except ConfigError as err:
        return stop(Stop(BAD_INPUT, f"launcher: {err}"))

    from launcher import security
    from launcher.comm import MPITimeout, PatientComm
    from launcher.hostfacts import gather_local
    from launcher.security import TLSUnavailable

    comm = PatientComm(world, timeout=timeout)
    try:
        facts = comm.gather(gather_local(rank), root=0)
        verdict = None
        if rank == 0:
            plan, reason = _plan_or_reason(options, settings, facts, env, size)
            try:
                credentials = None if options.plan else _credentials(plan)
            except TLSUnavailable as err:
                plan, reason, credentials = None, Stop(BAD_INPUT, f"launcher: {err}"), None
            verdict = (plan, reason, credentials)
        plan, reason, credentials = comm.bcast(verdict, root=0)
    except MPITimeout as err:
        print(f"launcher: rank {rank}: {err}; ending the job", file=sys.stderr)
        comm.abort(1)
        return 1
    if reason is not None:
        return stop(reason)
    if options.plan:
        return stop(Stop(0, plan.to_json()))
    security.apply(credentials)
    leave_mpi_job()  # read by MPI_Init only: the programs this rank starts are no ranks

    if "client" in plan.for_rank(rank).roles:
        from launcher.client_rank import ClientRank

        status = ClientRank(plan, comm, started).run()
    else:
        from launcher.serving import ServingRank

        status = ServingRank(plan, comm).run()
    comm.flush()
    return status


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        status = run(sys.argv[1:] if argv is None else argv, os.environ)
    except Stop as reason:  # before MPI could say which rank this is
        speaker = intended_rank(os.environ) == 0
        if speaker:
            print(reason.message, file=sys.stderr, flush=True)
        status = reason.status if speaker else 0  # see end_process
    end_process(status)


if __name__ == "__main__":
    main()
