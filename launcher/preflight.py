"""``python -m launcher --check``: is this environment ready for a job? One table says.

Admins and users want to know a setup works before a job waits in the queue, and the
launcher's own errors come one at a time, at the moment something would start. The
preflight takes the same steps as a real start (connect MPI, read the config, gather
host facts, make the plan, make TLS credentials), turns each failure into one line of
a table instead of an exit, and starts nothing. What depends on the node runs on every
rank and is gathered to rank 0 over MPI, so a problem on another node shows too.

The checks are functions that return a ``Check`` (pure where they can be);
``preflight`` does the MPI, the gathering and the printing.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dask.utils import format_bytes

from launcher.config import ConfigError, Setting, read_settings
from launcher.hostfacts import HostFacts, gather_local
from launcher.mpienv import diagnose_world, intended_rank, launched_size, library_name
from launcher.options import Options
from launcher.plan import Plan, _pick
from launcher.slurm import SlurmEnvError, read_allocation

OK, WARN, FAIL = "ok", "warn", "FAIL"
#: Exit status when a check fails (usage errors keep argparse's 2).
CHECK_FAILED = 1
#: Less free space than this below the local directory is a warning: workers spill there.
LOW_DISK = 1024**3
#: Packages the launcher runs on, and the order they are reported in.
PACKAGES = ("dask", "distributed", "dask-mpi", "mpi4py")
#: Where the fix starts in a message that says what is wrong and then what to do.
_FIX_STARTS = re.compile(r"\. (?=[A-Z])|[:;] (?=(?:use|start|install|point|pick|set) )")


@dataclass(frozen=True)
class Check:
    """One line of the table: what was checked, the verdict, what was found, the fix."""

    name: str
    verdict: str
    found: str
    fix: str = ""


@dataclass(frozen=True)
class HostReport:
    """What one rank found on its node, sent to rank 0."""

    facts: HostFacts
    versions: dict[str, str | None]


@dataclass(frozen=True)
class DirProbe:
    """One rank's attempt at the local directory: the error, or the free space."""

    host: str
    error: str | None
    free_bytes: int | None = None


@dataclass(frozen=True)
class MPIState:
    """How MPI came up in this process (``library`` None: mpi4py has no MPI library)."""

    size: int
    library: str | None
    problem: str | None  # why connect_mpi refused, before MPI_Init (its Stop message)
    mpi4py_built_for: tuple[int, int] | None = None
    library_standard: tuple[int, int] | None = None


@dataclass(frozen=True)
class Findings:
    """Everything rank 0 has gathered, for the checks to judge."""

    mpi: MPIState
    settings: dict[str, Setting] | None
    config_error: str | None
    reports: list[HostReport]
    plan: Plan | None
    plan_error: str | None
    probes: list[DirProbe]


def split_fix(message: str, fallback: str) -> tuple[str, str]:
    """(what is wrong, what to do) from one of the launcher's error messages.

    Those messages are written as a problem followed by its fix ("... . Use the
    mpiexec ...", "...: use srun --mpi=pmi2"); the table shows the two apart.
    """
    message = message.removeprefix("launcher: ").strip()
    match = _FIX_STARTS.search(message)
    if match is None:
        return message, fallback
    fix = message[match.end() :].rstrip(".")
    return message[: match.start()], fix[:1].upper() + fix[1:]


def failed(name: str, message: str, fallback: str) -> Check:
    """A FAIL line from an error message that may carry its own fix."""
    found, fix = split_fix(message, fallback)
    return Check(name, FAIL, found, fix)


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _version(numbers: tuple[int, int] | None) -> str:
    return ".".join(map(str, numbers)) if numbers else "?"


def mpi_check(env: Mapping[str, str], mpi: MPIState, mpi4py_version: str | None) -> Check:
    """The MPI library, mpi4py's build, and the world they see against what was launched."""
    fix = "use the mpirun/srun --mpi that belongs to mpi4py's MPI library"
    if mpi.problem:
        return failed("mpi", mpi.problem, fix)
    if mpi.library is None:
        return Check(
            "mpi",
            WARN,
            "mpi4py cannot load an MPI library: only single-process runs work",
            "Install an MPI (pip install mpich, or load the site's MPI module) and mpi4py for it",
        )
    problem = diagnose_world(env, mpi.size, mpi.library)
    if problem:
        return failed("mpi", problem, fix)
    launched = launched_size(env)
    if launched not in (mpi.size, 1):
        return Check("mpi", FAIL, f"MPI sees {mpi.size} processes, {launched} were started", fix)
    found = (
        f"{library_name(mpi.library)} (MPI {_version(mpi.library_standard)}), mpi4py "
        f"{mpi4py_version or '?'} (built for MPI {_version(mpi.mpi4py_built_for)}); "
        f"world of {mpi.size}"
    )
    if mpi.size == 1:
        found += " (one process)"
    elif launched == mpi.size:
        found += f" = the {launched} processes started"
    built, runs = mpi.mpi4py_built_for, mpi.library_standard
    if built and runs and runs < built:
        return Check(
            "mpi",
            WARN,
            found + "; the library is older than mpi4py's build",
            "Install mpi4py built against this MPI library (pip install --no-binary mpi4py)",
        )
    return Check("mpi", OK, found)


def slurm_check(env: Mapping[str, str]) -> Check:
    """The Slurm allocation as the planner reads it, in one line."""
    try:
        alloc = read_allocation(env)
    except SlurmEnvError as err:
        fix = "Run inside a job Slurm started, or unset the stray SLURM_* variables"
        return Check("slurm", FAIL, str(err), fix)
    if alloc is None:
        return Check("slurm", OK, "not in a Slurm job")
    where = f"step {alloc.step_id}" if alloc.in_step else "batch script (not inside srun)"
    nodes = f" on {','.join(alloc.nodes)}" if alloc.nodes else ""
    parts = [f"job {alloc.job_id}, {where}: {plural(alloc.tasks or 1, 'task')}{nodes}"]
    if alloc.cpus_per_task:
        parts.append(f"{plural(alloc.cpus_per_task, 'cpu')} per task")
    if alloc.mem_per_cpu_mib:
        parts.append(f"{alloc.mem_per_cpu_mib} MiB/cpu")
    elif alloc.mem_per_node_mib:
        parts.append(f"{alloc.mem_per_node_mib} MiB/node")
    if env.get("SLURM_MPI_TYPE"):
        parts.append(f"SLURM_MPI_TYPE={env['SLURM_MPI_TYPE']}")
    return Check("slurm", OK, ", ".join(parts))


def config_check(settings: Mapping[str, Setting] | None, error: str | None) -> Check:
    """The launcher's Dask config: readable, and which keys are not package defaults."""
    if settings is None:
        return failed("config", error or "unreadable", "Correct or remove that setting")
    changed = [f"{key} [{s.source}]" for key, s in settings.items() if s.source != "default"]
    return Check("config", OK, "set: " + ", ".join(changed) if changed else "package defaults")


def plan_check(plan: Plan | None, reason: str | None) -> Check:
    """The resolved plan in brief (``--plan`` has it all), or why there is none
    (``reason`` None: no plan was tried, because the config could not be read)."""
    if plan is None and reason is None:
        return Check("plan", WARN, "not made: the config cannot be read", "Fix the config first")
    if plan is None:
        fallback = "Change the setting it names (flag, DASK_LAUNCHER__*, or a Dask config file)"
        return failed("plan", reason, fallback)
    workers, sources = plan.workers, plan.sources
    memory = {w.memory_limit for w in workers}
    each = format_bytes(memory.pop()) if len(memory) == 1 else "per node (see --plan)"
    found = (
        f"{plan.layout}, {plural(plan.mpi_size, 'rank')} [{sources.get('mpi_size', 'MPI')}]: "
        f"{plural(len(workers), 'worker')} x {plural(workers[0].nthreads or 1, 'thread')} "
        f"[{sources['nthreads']}], {each} each [{sources['memory_limit']}]"
    )
    if gpus := {len(w.gpus) for w in workers if w.gpus}:
        found += f", {plural(max(gpus), 'GPU')} each [{sources['gpus']}]"
    if plan.notes:  # what would cost the job, each with what to do
        return Check("plan", WARN, found, " ".join(plan.notes))
    return Check("plan", OK, found)


def _by_host(facts: Sequence[HostFacts]) -> dict[str, HostFacts]:
    return {f.hostname: f for f in facts}


def interface_check(name: str | None, source: str, facts: Sequence[HostFacts]) -> Check:
    """The chosen interface exists and has an IPv4 address on every host of the job."""
    if name is None:
        return Check("interface", OK, f"not set [{source}]: distributed picks the address")
    hosts = _by_host(facts)
    common = set.intersection(*({n for n, a in f.interfaces.items() if a} for f in hosts.values()))
    fix = (
        "Set --interface (or DASK_LAUNCHER__INTERFACE) to one with an IPv4 address on every "
        f"host: {', '.join(sorted(common)) or 'none'}"
    )
    missing = [h for h, f in hosts.items() if name not in f.interfaces]
    if missing:
        there = ", ".join(sorted(hosts[missing[0]].interfaces)) or "none"
        where = ", ".join(missing)
        found = f"{name!r} [{source}] does not exist on {where} (interfaces there: {there})"
        return Check("interface", FAIL, found, fix)
    bare = [h for h, f in hosts.items() if not f.interfaces[name]]
    if bare:
        found = f"{name!r} [{source}] has no IPv4 address on {', '.join(bare)}"
        return Check("interface", FAIL, found, fix)
    addresses = ", ".join(f"{f.interfaces[name][0]} on {h}" for h, f in hosts.items())
    return Check("interface", OK, f"{name} [{source}]: {addresses}")


def probe_directory(base: str, host: str) -> DirProbe:
    """Do what a worker will do below ``base``: make a private directory (then remove it).

    Trying is the only honest test: root passes every permission check, and a read-only
    or full file system shows only when writing. A missing ``base`` is fine if it can be
    made (workers make it), so the nearest existing parent is tried instead, and
    nothing is left behind.
    """
    existing = Path(base)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return DirProbe(host, f"{existing} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dask-launcher-check-", dir=existing))
    except OSError as err:
        return DirProbe(host, f"cannot create a directory in {existing}: {err.strerror}")
    return DirProbe(host, None, shutil.disk_usage(existing).free)


def directory_check(base: str | None, source: str, probes: Sequence[DirProbe]) -> Check:
    """The local directory can be made on every host, and has room to spill."""
    if base is None:
        return Check("local-dir", WARN, "not checked: there is no plan", "Fix the plan line first")
    bad = [p for p in probes if p.error]
    if bad:
        found = f"{base} [{source}] on {bad[0].host}: {bad[0].error}"
        fix = "Point --local-directory (or DASK_LAUNCHER__LOCAL_DIRECTORY) at a writable directory"
        return Check("local-dir", FAIL, found, fix)
    least = min(probes, key=lambda p: p.free_bytes or 0)
    free = format_bytes(least.free_bytes or 0)
    where = f" on {least.host}" if len({p.host for p in probes}) > 1 else ""
    if (least.free_bytes or 0) < LOW_DISK:
        found = f"{base} [{source}]: writable, only {free} free{where}"
        fix = "Point --local-directory at a disk with room for spilled data, e.g. $LOCALSCRATCH"
        return Check("local-dir", WARN, found, fix)
    return Check("local-dir", OK, f"{base} [{source}]: writable, {free} free{where}")


def tls_check(tls: bool, source: str) -> Check:
    """TLS (the default) needs credentials made here; plain TCP lets anyone on the nodes in."""
    if not tls:
        found = f"plain TCP [{source}]: anyone who can reach the nodes can run code as you"
        fix = "Drop --insecure (and launcher.tls: false) unless only you can reach these nodes"
        return Check("tls", WARN, found, fix)
    from launcher.security import TLSUnavailable, make_credentials

    try:
        make_credentials()
    except TLSUnavailable as err:
        return failed("tls", str(err), "Install cryptography, or run with --insecure")
    except Exception as err:  # a broken cryptography/OpenSSL fails in many ways
        fix = "Reinstall cryptography (pip install --force-reinstall cryptography)"
        return Check("tls", FAIL, f"cannot make a certificate: {err}", fix)
    version = _installed("cryptography") or "?"
    return Check("tls", OK, f"cryptography {version} made this run's certificate [{source}]")


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Python's and the launcher's packages' versions in this process (None: missing)."""
    return {"python": platform.python_version(), **{p: _installed(p) for p in PACKAGES}}


def versions_check(reports: Sequence[HostReport], library: str | None) -> Check:
    """The packages are there, and the same on every host (distributed needs that)."""
    by_host = {r.facts.hostname: r.versions for r in reports}
    for host, versions in by_host.items():
        missing = [p for p, v in versions.items() if v is None]
        if missing:
            found = f"{', '.join(missing)} not installed on {host}"
            return Check("versions", FAIL, found, f"pip install {' '.join(missing)}")
    first = next(iter(by_host.values()))
    mpi = library_name(library) if library else "no MPI library"
    found = ", ".join(f"{p} {v}" for p, v in first.items()) + f"; {mpi}"
    differ = [p for p in first if len({v[p] for v in by_host.values()}) > 1]
    if differ:
        found = "differ between hosts: " + "; ".join(
            f"{p} " + ", ".join(f"{v[p]} on {h}" for h, v in by_host.items()) for p in differ
        )
        fix = "Use one Python environment on every node (LAUNCHER_VENV on a shared file system)"
        return Check("versions", WARN, found, fix)
    return Check("versions", OK, found)


def graphviz_check() -> Check:
    """Optional: ``.visualize()`` and ``--graph`` need graphviz's package and ``dot``."""
    missing = []
    try:
        import graphviz  # noqa: F401
    except Exception:  # ImportError, or a broken install
        missing.append("Python package 'graphviz' missing")
    dot = shutil.which("dot")
    if dot is None:
        missing.append("no 'dot' program on PATH")
    if missing:
        found = "; ".join(missing) + " (only task-graph drawing needs them)"
        fix = "pip install graphviz, and get dot: module load Graphviz (or apt install graphviz)"
        return Check("graphviz", WARN, found, fix)
    return Check("graphviz", OK, f"graphviz {_installed('graphviz') or '?'}, dot at {dot}")


def format_table(checks: Sequence[Check], title: str) -> str:
    """The table users read: one line per check, the fix on the same line."""
    width = max(len(c.name) for c in checks)
    lines = [f"launcher --check: {title}"]
    for c in checks:
        line = f"  {c.name:<{width}}  {c.verdict:<4}  {c.found}"
        lines.append(line + (f"  -> fix: {c.fix}" if c.verdict != OK and c.fix else ""))
    counts = {v: sum(c.verdict == v for c in checks) for v in (OK, WARN, FAIL)}
    verdict = "not ready: fix the FAIL lines" if counts[FAIL] else "ready"
    lines.append(
        f"launcher --check: {counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} FAIL; {verdict}"
    )
    return "\n".join(lines)


# --- the run: every rank takes part, rank 0 decides and prints ---------------------


def _connect(env: Mapping[str, str], timeout: float) -> tuple[Any, MPIState]:
    """MPI's world as a real run connects it; a launcher the library cannot join is a
    problem to report (in a world of one) instead of the run's error and exit."""
    from launcher.bootstrap import Stop, connect_mpi
    from launcher.comm import SoloComm

    try:
        world, _ = connect_mpi(env, timeout)
        problem = None
    except Stop as stop:
        world, problem = SoloComm(), stop.message
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return world, MPIState(world.Get_size(), None, problem)
    return world, MPIState(
        size=world.Get_size(),
        library=mpi.Get_library_version(),
        problem=problem,
        mpi4py_built_for=(mpi.VERSION, mpi.SUBVERSION),
        library_standard=mpi.Get_version(),
    )


def _settings() -> tuple[dict[str, Setting] | None, str | None]:
    try:
        return read_settings(), None
    except ConfigError as err:
        return None, str(err)


def _chosen(
    flag: Any, flag_name: str, settings: Mapping[str, Setting] | None, key: str
) -> tuple[Any, str]:
    """A value as the planner picks it (flag, then config), even when there is no plan."""
    if settings is None:
        return (flag, f"flag {flag_name}") if flag is not None else (None, "config unreadable")
    return _pick(flag, flag_name, settings[key]) or (None, "default")


def _plan(
    options: Options, settings: dict[str, Setting] | None, facts: list, env: Mapping, size: int
) -> tuple[Plan | None, str | None]:
    """The plan a real run would make, or why there is none.

    Planned as ``--plan`` does: a world of one inside a step of several tasks (the wrong
    ``--mpi``) is planned for the tasks Slurm started, which is what the job meant.
    """
    from launcher.bootstrap import _plan_or_reason

    if settings is None:
        return None, None
    plan, reason = _plan_or_reason(replace(options, plan=True), settings, facts, env, size)
    return plan, reason.message if reason else None


def _title(size: int, env: Mapping[str, str], reports: Sequence[HostReport]) -> str:
    hosts = list(dict.fromkeys(r.facts.hostname for r in reports))
    shown = ", ".join(hosts[:4]) + (f" and {len(hosts) - 4} more" if len(hosts) > 4 else "")
    launched = launched_size(env)
    if size == 1 and launched > 1:
        return f"{launched} processes started, but MPI did not join them: only this one on {shown}"
    return f"{plural(size, 'rank')} on {shown}"


def evaluate(options: Options, env: Mapping[str, str], found: Findings) -> list[Check]:
    """Rank 0: every check, in the order a user fixes them."""
    settings, plan = found.settings, found.plan
    interface, interface_source = _chosen(options.interface, "--interface", settings, "interface")
    tls, tls_source = _chosen(options.tls, "--insecure", settings, "tls")
    base = os.path.dirname(plan.run_directory) if plan else None
    base_source = plan.sources["local_directory"] if plan else ""
    return [
        mpi_check(env, found.mpi, found.reports[0].versions.get("mpi4py")),
        slurm_check(env),
        config_check(settings, found.config_error),
        plan_check(plan, found.plan_error),
        interface_check(interface, interface_source, [r.facts for r in found.reports]),
        directory_check(base, base_source, found.probes),
        tls_check(tls is not False, tls_source),
        versions_check(found.reports, found.mpi.library),
        graphviz_check(),
    ]


def preflight(options: Options, env: Mapping[str, str]) -> int:
    """Run every check on every rank; rank 0 prints the table once. Exit status 1 if a
    check FAILs, else 0; nothing is started.

    In a world MPI did not join (each process alone), only the process the launcher
    meant as rank 0 checks and prints, and its status is the job's. The others cannot
    send it anything, so they exit 0 at once: launchers end the whole job at the first
    non-zero exit, which could cut that report off.
    """
    from launcher.bootstrap import startup_timeout
    from launcher.comm import MPITimeout, PatientComm

    timeout = startup_timeout(options)
    world, mpi = _connect(env, timeout)
    size, rank = world.Get_size(), world.Get_rank()
    speaker = rank == 0 and (size > 1 or intended_rank(env) == 0)
    if not speaker and size == 1:
        return 0
    settings, config_error = _settings()
    comm = PatientComm(world, timeout=timeout)
    try:
        mine = HostReport(gather_local(rank), package_versions())
        reports = comm.gather(mine, root=0)
        plan, reason = (None, None)
        if rank == 0:
            plan, reason = _plan(options, settings, [r.facts for r in reports], env, size)
        base = comm.bcast(os.path.dirname(plan.run_directory) if plan else None, root=0)
        host = mine.facts.hostname
        probe = probe_directory(base, host) if base else DirProbe(host, None)
        probes = comm.gather(probe, root=0)
        status = 0
        if rank == 0:
            found = Findings(mpi, settings, config_error, reports, plan, reason, probes)
            checks = evaluate(options, env, found)
            status = CHECK_FAILED if any(c.verdict == FAIL for c in checks) else 0
            if speaker:
                print(format_table(checks, _title(size, env, reports)), flush=True)
        status = comm.bcast(status, root=0)
    except MPITimeout as err:
        print(f"launcher: rank {rank}: {err}; ending the job", file=sys.stderr)
        comm.abort(1)
        return 1
    # Rank 0 carries the verdict (bootstrap.end_process): with srun --kill-on-bad-exit, a
    # rank that exited non-zero first got rank 0 killed, and the job's status was 143.
    return status if speaker else 0
