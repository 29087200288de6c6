"""Deciding, not doing: turn the job's facts into what every rank will run.

``make_plan`` is pure. It takes the Slurm environment, the MPI world (size and the host
of each rank), what each host looks like, the config and the flags, and returns a
``Plan``: each rank's role, worker threads, memory and directory, the network
interface, and for every value where it came from. ``--plan`` prints it; the runtime
executes it.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dask.utils import format_bytes

from launcher.config import Setting
from launcher.hostfacts import HostFacts
from launcher.mpienv import intended_rank, launched_size
from launcher.options import Options, Target
from launcher.slurm import MIB, Allocation, read_allocation

SCRATCH_VARS = ("LOCALSCRATCH", "SLURM_TMPDIR", "TMPDIR")


class PlanError(ValueError):
    """The job cannot run as asked; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class RankPlan:
    rank: int
    host: str
    roles: tuple[str, ...]
    nthreads: int | None = None
    memory_limit: int | None = None
    local_directory: str | None = None
    #: The worker's CUDA_VISIBLE_DEVICES; None: the rank's environment as it is.
    gpus: tuple[str, ...] | None = None
    #: The worker's Dask resources; None: distributed.worker.resources as configured.
    resources: Mapping[str, float] | None = None

    @property
    def is_worker(self) -> bool:
        return "worker" in self.roles


@dataclass(frozen=True)
class Plan:
    mpi_size: int
    layout: str
    scheduler_rank: int
    client_rank: int
    ranks: tuple[RankPlan, ...]
    interface: str | None
    dashboard: bool
    dashboard_address: str
    protocol: str
    nanny: bool
    startup_timeout: float
    shutdown_timeout: float
    interrupt_grace: float
    paused_timeout: float
    run_directory: str
    target: Target
    summary_path: str | None
    report_path: str | None
    progress_interval: float | None  # None: no progress lines
    login_host: str | None
    verbose: int
    sources: dict[str, str] = field(default_factory=dict)
    #: What the planner noticed that does not stop the job but costs it, one line each.
    notes: tuple[str, ...] = ()

    @property
    def workers(self) -> tuple[RankPlan, ...]:
        return tuple(r for r in self.ranks if r.is_worker)

    @property
    def stdin_through_scheduler(self) -> bool:
        """MPI launchers give their standard input to rank 0: a script on another rank
        reads it through the scheduler there (launcher/stdin.py)."""
        return self.client_rank != 0 and self.scheduler_rank == 0

    def for_rank(self, rank: int) -> RankPlan:
        return self.ranks[rank]

    def to_dict(self) -> dict[str, Any]:
        workers = self.workers
        memory = {w.memory_limit for w in workers}
        settings = {
            "layout": self.layout,
            "nthreads": workers[0].nthreads if workers else None,
            "memory_limit": memory.pop() if len(memory) == 1 else "per node, see ranks",
            "local_directory": self.run_directory,
            "gpus": "per worker, see ranks" if any(w.gpus for w in workers) else None,
            "resources": "per worker, see ranks" if any(w.resources for w in workers) else None,
            "interface": self.interface,
            "dashboard": self.dashboard,
            "dashboard_address": self.dashboard_address,
            "protocol": self.protocol,
            "nanny": self.nanny,
            "startup_timeout": self.startup_timeout,
            "shutdown_timeout": self.shutdown_timeout,
            "interrupt_grace": self.interrupt_grace,
            "paused_timeout": self.paused_timeout,
            "progress_interval": self.progress_interval,
            "login_host": self.login_host,
        }
        return {
            "mpi_size": self.mpi_size,
            "mpi_size_source": self.sources.get("mpi_size", "MPI"),
            "layout": self.layout,
            "scheduler_rank": self.scheduler_rank,
            "client_rank": self.client_rank,
            "workers": len(workers),
            "settings": {
                name: {"value": value, "source": self.sources.get(name, "default")}
                for name, value in settings.items()
            },
            "ranks": [{k: v for k, v in vars(r).items() if v is not None} for r in self.ranks],
            "target": self.target.to_dict(),
            "summary": self.summary_path,
            "report": self.report_path,
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


#: The settings of distributed's own that the plan reads (bootstrap passes their values).
DISTRIBUTED_SETTINGS = (
    "distributed.worker.resources",
    "distributed.worker.lifetime.duration",
    "distributed.worker.lifetime.restart",
    "distributed.scheduler.idle-timeout",
)


@dataclass(frozen=True)
class PlanInputs:
    """Everything the plan depends on; nothing else is read while planning."""

    env: Mapping[str, str]
    rank_hosts: tuple[str, ...]
    facts: Mapping[str, HostFacts]
    settings: Mapping[str, Setting]
    options: Options
    run_id: str
    cwd: str
    mpi_size_source: str = "MPI"
    #: Each rank's visible GPUs (HostFacts.gpus), in rank order; empty: none known.
    rank_gpus: tuple[tuple[str, ...] | None, ...] = ()
    #: The values of DISTRIBUTED_SETTINGS in the Dask config (None: not set).
    distributed: Mapping[str, Any] = field(default_factory=dict)


def _pick(flag: Any, flag_name: str, setting: Setting) -> tuple[Any, str] | None:
    """A flag beats an explicitly configured value; None means "derive it"."""
    if flag is not None:
        return flag, f"flag {flag_name}"
    if setting.value is not None:
        return setting.value, setting.source
    return None


def _configured(setting: Setting) -> tuple[Any, str]:
    """A setting that has no flag: its value and source as configured."""
    return setting.value, setting.source


def _roles(size: int, layout: str) -> tuple[str, int, int, list[tuple[str, ...]]]:
    if size == 1:
        return "single-process", 0, 0, [("scheduler", "client", "worker")]
    if layout == "dedicated":
        return layout, 0, 1, [("scheduler",), ("client",)] + [("worker",)] * (size - 2)
    return layout, 0, 0, [("scheduler", "client")] + [("worker",)] * (size - 1)


def _check_layout(size: int, layout: str, source: str) -> None:
    needed = {"dedicated": 3, "compact": 2}[layout]
    if size == 1 and layout == "compact":
        return
    if size < needed:
        roles = (
            "a scheduler, a client and a worker"
            if layout == "dedicated"
            else ("a scheduler with the client, and a worker")
        )
        raise PlanError(
            f"layout {layout} ({source}) needs at least {needed} MPI ranks ({roles}); "
            f"this job has {size}. Start more ranks, or run one process without mpirun"
            + (", or use --layout compact" if layout == "dedicated" else "")
        )


def _threads(inputs: PlanInputs, alloc: Allocation | None) -> tuple[int, str]:
    picked = _pick(inputs.options.nthreads, "--nthreads", inputs.settings["nthreads"])
    if picked:
        return picked
    if alloc and alloc.cpus_per_task:
        return alloc.cpus_per_task, "env SLURM_CPUS_PER_TASK"
    return 1, "default (no SLURM_CPUS_PER_TASK)"


def _cores_notes(
    inputs: PlanInputs, nthreads: int, source: str, worker_hosts: list[str]
) -> tuple[str, ...]:
    """Workers sized from --cpus-per-task on tasks that srun bound to fewer cores.

    Slurm 22.05 and 23.02 do not pass sbatch's --cpus-per-task on to srun: a plain
    ``srun`` there binds each task to one core, while SLURM_CPUS_PER_TASK still says
    how many the job asked for, so every worker ran that many threads on one core.
    """
    if source != "env SLURM_CPUS_PER_TASK":
        return ()
    fewest = min(
        (inputs.facts[host] for host in dict.fromkeys(worker_hosts) if host in inputs.facts),
        key=lambda facts: facts.cpus,
        default=None,
    )
    if fewest is None or fewest.cpus >= nthreads:
        return ()
    return (
        f"worker ranks may run on {fewest.cpus} CPU(s) (on {fewest.hostname}) but get "
        f"{nthreads} threads each ({source}): start them with srun "
        f"--cpus-per-task=$SLURM_CPUS_PER_TASK (Slurm 22.05 and 23.02 do not pass "
        f"sbatch's on to srun; the launcher's jobscripts do)",
    )


def _memory_rule(inputs: PlanInputs, alloc: Allocation | None):
    """A function host -> bytes, and the source of the rule."""
    picked = _pick(inputs.options.memory_limit, "--memory-limit", inputs.settings["memory-limit"])
    if picked:
        value, source = picked
        return (lambda host: value), source
    ranks_on = Counter(inputs.rank_hosts)
    if alloc and alloc.mem_per_cpu_mib:
        cpus = alloc.cpus_per_task or 1
        per_task = alloc.mem_per_cpu_mib * cpus * MIB
        return (lambda host: per_task), (
            f"env SLURM_MEM_PER_CPU x cpus per task ({alloc.mem_per_cpu_mib} MiB x {cpus})"
        )
    if alloc and alloc.mem_per_node_mib:
        per_node = alloc.mem_per_node_mib * MIB
        return (lambda host: per_node // ranks_on[host]), (
            f"env SLURM_MEM_PER_NODE / tasks on the node ({alloc.mem_per_node_mib} MiB / n)"
        )
    any_facts = next(iter(inputs.facts.values()))

    def node_share(host: str) -> int:
        return inputs.facts.get(host, any_facts).memory_bytes // ranks_on[host]

    return node_share, "node memory / ranks on the node (no Slurm memory request)"


#: Less cannot hold a Dask worker: its process takes about 60 MiB before any task
#: (measured with distributed 2026.11), and distributed pauses it at 80% of its limit.
MIN_WORKER_MEMORY = 128 * MIB


def _check_worker_memory(inputs: PlanInputs, ranks: list[RankPlan], source: str) -> None:
    """A limit too small for a worker stops the job before it starts.

    Dask takes ``--memory-limit 4`` as 4 bytes: its workers were restarted over and
    over for memory and every task failed with KilledWorker; at 68 MiB they paused at
    their start and the job waited for its walltime. A limit derived from a Slurm
    request (``--mem-per-cpu=100M``) or from many ranks on a small machine does the
    same."""
    smallest = min((r.memory_limit for r in ranks if r.is_worker and r.memory_limit), default=None)
    if smallest is None or smallest >= MIN_WORKER_MEMORY:
        return
    chosen = inputs.options.memory_limit, inputs.settings["memory-limit"].value
    how = (
        "give a size with its unit, such as 4GiB"
        if any(value is not None for value in chosen)
        else "ask Slurm for more memory per task (--mem-per-cpu, --mem), or start fewer "
        "tasks per node"
    )
    raise PlanError(
        f"workers would get {format_bytes(smallest)} of memory each ({source}), less than "
        f"the {format_bytes(MIN_WORKER_MEMORY)} a Dask worker needs (its process takes "
        f"about 60 MiB before any task, and Dask pauses it at 80% of its limit): {how}"
    )


def _memory_notes(inputs: PlanInputs, ranks: list[RankPlan], source: str) -> tuple[str, ...]:
    """Worker memory limits that add up to more than the job may use on a host.

    Dask spills, pauses and restarts a worker against its own limit only; where the
    limits add up to more than the job's memory on the node (its cgroup, or the RAM),
    the kernel's out-of-memory killer ends workers first, and Dask never spills. Only a
    limit the user or the site chose can do that: the derived ones divide the node.
    """
    limits: dict[str, list[int]] = {}
    for rank in ranks:
        if rank.is_worker and rank.memory_limit:
            limits.setdefault(rank.host, []).append(rank.memory_limit)
    over = [
        (host, sum(each), inputs.facts[host].memory_bytes, len(each))
        for host, each in limits.items()
        if host in inputs.facts and sum(each) > inputs.facts[host].memory_bytes
    ]
    if not over:
        return ()
    host, total, usable, count = max(over, key=lambda o: o[1] - o[2])
    return (
        f"worker memory limits add up to {format_bytes(total)} on {host} ({count} x "
        f"{format_bytes(total // count)}, {source}) but the job may use "
        f"{format_bytes(usable)} there: the kernel would kill workers before Dask could "
        f"spill their data; give them at most {format_bytes(usable // count)} each, or "
        f"ask Slurm for more memory",
    )


def _gpus_of_workers(
    inputs: PlanInputs, roles: list[tuple[str, ...]]
) -> tuple[dict[int, tuple[str, ...]], str]:
    """The GPUs each worker gets, by rank, and the source of the rule.

    With ``--gpus-per-node`` (or ``--gres=gpu:N``) Slurm gives every task of a node all
    of the node's GPUs, and every worker ran its work on the first (the CUDA default):
    one GPU busy, the others idle. As dask-cuda's LocalCUDACluster does, the GPUs a
    node's workers all see are shared out among them, an equal number each (one each
    when there are as many as workers, in turn when fewer). Where Slurm bound GPUs to
    tasks (``--gpus-per-task``, ``--gpu-bind``), or the workers of a node see different
    GPUs, or one, or none, they are left as they are; so is the rank that runs the
    user's code.
    """
    bound = [name for name in ("SLURM_GPUS_PER_TASK", "SLURM_GPU_BIND") if inputs.env.get(name)]
    if bound:  # each task's own, renumbered from 0 where Slurm constrains devices per task
        return {}, f"as Slurm bound them to tasks (env {bound[0]})"
    workers_on: dict[str, list[int]] = {}
    for rank, (host, rank_roles) in enumerate(zip(inputs.rank_hosts, roles, strict=True)):
        if "worker" in rank_roles:
            workers_on.setdefault(host, []).append(rank)
    shared: dict[int, tuple[str, ...]] = {}
    for workers in workers_on.values():
        seen = {inputs.rank_gpus[r] for r in workers} if inputs.rank_gpus else {None}
        visible = seen.pop() if len(seen) == 1 else None
        if len(workers) < 2 or not visible or len(visible) < 2:
            continue
        each = max(1, len(visible) // len(workers))
        for index, rank in enumerate(workers):
            first = index * each % len(visible)
            shared[rank] = visible[first : first + each]
    if shared:
        return shared, "env CUDA_VISIBLE_DEVICES shared out among the node's workers"
    return shared, "as each task sees them (env CUDA_VISIBLE_DEVICES, if set)"


def _distributed_notes(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """Settings of distributed, kept in a Dask config from other clusters, that end a
    job: said at the start (``--check`` and ``--plan`` show them before the queue), not
    only when they strike, hours into it (launcher/client_rank.py LOSS_HINTS and
    JobScheduler.check_idle say it then)."""
    notes = []
    lifetime = settings.get("distributed.worker.lifetime.duration")
    if lifetime and not settings.get("distributed.worker.lifetime.restart"):
        notes.append(
            f"distributed.worker.lifetime.duration ({lifetime}) in your Dask config closes "
            "every worker that long into the job, and in one job none replaces them: drop "
            "the setting (or set distributed.worker.lifetime.restart to true)"
        )
    idle = settings.get("distributed.scheduler.idle-timeout")
    if idle:
        notes.append(
            f"distributed.scheduler.idle-timeout ({idle}) in your Dask config ends the job "
            "once the cluster has had no work that long, as while your script works on its "
            "own: drop the setting"
        )
    return tuple(notes)


def _resources_of_workers(
    inputs: PlanInputs, roles: list[tuple[str, ...]], gpus: Mapping[int, tuple[str, ...]]
) -> tuple[dict[int, dict[str, float]], str]:
    """Each worker's Dask resources, by rank, and their source.

    dask-jobqueue users declare a GPU worker's ``--resources GPU=1`` themselves, and
    their scripts ask for it (``client.submit(f, resources={"GPU": 1})``); in a job no
    worker had it, and such a task failed at once (NoWorkerInThisJob). The plan knows
    the GPUs each worker uses, so a worker with GPUs has as many of resource "GPU"; one
    with none declares none, and what ``distributed.worker.resources`` declares wins.
    Without GPUs nothing is set, and workers read that setting themselves."""
    declared = dict(inputs.distributed.get("distributed.worker.resources") or {})
    config = "distributed.worker.resources in the Dask config"
    by_rank: dict[int, dict[str, float]] = {}
    for rank, rank_roles in enumerate(roles):
        seen = inputs.rank_gpus[rank] if inputs.rank_gpus else None
        if "worker" in rank_roles and (used := gpus.get(rank, seen)):
            by_rank[rank] = {"GPU": len(used), **declared}
    if not by_rank:
        return {}, config if declared else "none declared"
    workers = [r for r, rank_roles in enumerate(roles) if "worker" in rank_roles]
    by_rank.update({rank: declared for rank in workers if rank not in by_rank})
    if "GPU" in declared:
        return by_rank, config
    return by_rank, "GPU: the GPUs each worker uses" + (f"; the rest {config}" if declared else "")


def _gpu_notes(inputs: PlanInputs, ranks: list[RankPlan]) -> tuple[str, ...]:
    """GPUs shared out unevenly on a node: two workers to a GPU, or a GPU left idle
    (``--ntasks-per-node=5`` with 4 GPUs a node suits only the node of task 0)."""
    for host in dict.fromkeys(r.host for r in ranks if r.gpus):
        workers = [r for r in ranks if r.host == host and r.gpus]
        visible = inputs.rank_gpus[workers[0].rank] or ()
        used = {gpu for worker in workers for gpu in worker.gpus or ()}
        idle = [gpu for gpu in visible if gpu not in used]
        if idle or len(workers) > len(visible):
            how = f"GPU {', '.join(idle)} idle" if idle else "two workers to a GPU"
            return (
                f"{len(workers)} workers on {host} share its {len(visible)} GPUs unevenly "
                f"({how}): start as many worker tasks as GPUs on each node (task 0 runs "
                f"the scheduler and your script), or bind GPUs to tasks with --gpus-per-task",
            )
    return ()


def _local_base(inputs: PlanInputs) -> tuple[str, str]:
    picked = _pick(
        inputs.options.local_directory, "--local-directory", inputs.settings["local-directory"]
    )
    if picked:
        path, source = picked
        return os.path.normpath(os.path.join(inputs.cwd, _expand(path, source, inputs.env))), source
    for var in SCRATCH_VARS:
        if inputs.env.get(var):
            return inputs.env[var], f"env {var}"
    return "/tmp", "default (no $LOCALSCRATCH, $SLURM_TMPDIR or $TMPDIR)"


_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _expand(path: str, source: str, env: Mapping[str, str]) -> str:
    """``$LOCALSCRATCH/dask`` or ``~/spill``, as site configs write them.

    dask-jobqueue's configs put ``local-directory: $TMPDIR`` into a jobscript, where the
    job's shell expands it; here nothing would, and the workers made a directory named
    ``$LOCALSCRATCH`` in the job's working directory. A variable this job does not have
    is an error rather than an empty string: ``/dask`` is not what the admin meant.
    """

    def value(name: str) -> str:
        if not env.get(name):
            raise PlanError(
                f"local directory {path!r} ({source}) uses ${name}, which is not set in "
                f"this job: set it, or point --local-directory at a directory"
            )
        return env[name]

    if path == "~" or path.startswith("~/"):
        path = value("HOME") + path[1:]
    elif path.startswith("~"):
        path = os.path.expanduser(path)  # ~user: from the password database
    return _VARIABLE.sub(lambda m: value(m.group(1) or m.group(2)), path)


def _check_interface(name: str, source: str, inputs: PlanInputs) -> None:
    for host in dict.fromkeys(inputs.rank_hosts):
        facts = inputs.facts.get(host)
        if facts is None:
            continue
        if name not in facts.interfaces:
            raise PlanError(
                f"network interface {name!r} ({source}) does not exist on {host}; "
                f"interfaces there: {', '.join(sorted(facts.interfaces)) or 'none'}"
            )
        if not facts.interfaces[name]:
            with_ip = sorted(n for n, a in facts.interfaces.items() if a)
            raise PlanError(
                f"network interface {name!r} ({source}) on {host} has no IPv4 address; "
                f"interfaces with one: {', '.join(with_ip) or 'none'}"
            )


def hosts_a_nanny(
    env: Mapping[str, str], options: Options, settings: Mapping[str, Setting]
) -> bool:
    """Before MPI is up: will this process run a worker under a nanny?

    Decided from what the process launcher says (rank, size), so that the fork server
    can be started before MPI_Init; the plan made later is the authority, and a wrong
    guess only costs speed.
    """
    nanny = options.nanny if options.nanny is not None else settings["nanny"].value
    if not nanny:
        return False
    return launched_size(env) == 1 or is_a_worker_rank(env, options, settings)


def is_a_worker_rank(
    env: Mapping[str, str], options: Options, settings: Mapping[str, Setting]
) -> bool:
    """Before MPI is up: is this one of several ranks, one that runs a worker and none
    of the user's code? (Guessed as ``hosts_a_nanny`` is.)"""
    size, rank = launched_size(env), intended_rank(env)
    layout = options.layout or settings["layout"].value
    return size > 1 and rank >= (2 if layout == "dedicated" else 1)


def make_plan(inputs: PlanInputs) -> Plan:
    opts, settings = inputs.options, inputs.settings
    size = len(inputs.rank_hosts)
    sources: dict[str, str] = {"mpi_size": inputs.mpi_size_source}
    alloc = read_allocation(inputs.env)

    layout, layout_source = _pick(opts.layout, "--layout", settings["layout"]) or (
        "compact",
        "default",
    )
    _check_layout(size, layout, layout_source)
    layout, scheduler_rank, client_rank, roles = _roles(size, layout)
    sources["layout"] = layout_source

    nthreads, sources["nthreads"] = _threads(inputs, alloc)
    memory_for, sources["memory_limit"] = _memory_rule(inputs, alloc)
    base, sources["local_directory"] = _local_base(inputs)
    run_directory = os.path.join(base, f"dask-launcher-{inputs.run_id}")

    picked = _pick(opts.interface, "--interface", settings["interface"])
    interface, sources["interface"] = picked or (None, "default (distributed's choice)")
    if interface:
        _check_interface(interface, sources["interface"], inputs)

    dashboard, sources["dashboard"] = _pick(opts.dashboard, "--no-dashboard", settings["dashboard"])
    dashboard_address, sources["dashboard_address"] = _pick(
        opts.dashboard_address, "--dashboard-address", settings["dashboard-address"]
    )
    tls, sources["protocol"] = _pick(opts.tls, "--insecure", settings["tls"])
    nanny, sources["nanny"] = _pick(opts.nanny, "--no-nanny", settings["nanny"])
    startup_timeout, sources["startup_timeout"] = _pick(
        opts.startup_timeout, "--startup-timeout", settings["startup-timeout"]
    )
    shutdown_timeout, sources["shutdown_timeout"] = _configured(settings["shutdown-timeout"])
    interrupt_grace, sources["interrupt_grace"] = _configured(settings["interrupt-grace"])
    paused_timeout, sources["paused_timeout"] = _configured(settings["paused-timeout"])

    progress, progress_source = _pick(opts.progress, "--no-progress", settings["progress"])
    interval, interval_source = _pick(
        opts.progress_interval, "--progress-interval", settings["progress-interval"]
    )
    sources["progress_interval"] = interval_source if progress else progress_source
    login = _pick(None, "", settings["login-host"])
    if login is None and inputs.env.get("SLURM_SUBMIT_HOST"):
        login = inputs.env["SLURM_SUBMIT_HOST"], "env SLURM_SUBMIT_HOST"
    login_host, sources["login_host"] = login or (None, "default (not in a Slurm job)")

    gpus, sources["gpus"] = _gpus_of_workers(inputs, roles)
    resources, sources["resources"] = _resources_of_workers(inputs, roles, gpus)
    ranks = []
    for rank, (host, rank_roles) in enumerate(zip(inputs.rank_hosts, roles, strict=True)):
        if "worker" in rank_roles:
            ranks.append(
                RankPlan(
                    rank,
                    host,
                    rank_roles,
                    nthreads,
                    memory_for(host),
                    os.path.join(run_directory, f"worker-{rank}"),
                    gpus.get(rank),
                    resources.get(rank),
                )
            )
        else:
            ranks.append(RankPlan(rank, host, rank_roles))

    _check_worker_memory(inputs, ranks, sources["memory_limit"])
    worker_hosts = [r.host for r in ranks if r.is_worker]
    return Plan(
        mpi_size=size,
        layout=layout,
        scheduler_rank=scheduler_rank,
        client_rank=client_rank,
        ranks=tuple(ranks),
        interface=interface,
        dashboard=dashboard,
        dashboard_address=dashboard_address,
        protocol="tls" if tls else "tcp",
        nanny=nanny,
        startup_timeout=startup_timeout,
        shutdown_timeout=shutdown_timeout,
        interrupt_grace=interrupt_grace,
        paused_timeout=paused_timeout,
        run_directory=run_directory,
        target=opts.target,
        summary_path=opts.summary,
        report_path=opts.report,
        progress_interval=interval if progress else None,
        login_host=login_host,
        verbose=opts.verbose,
        sources=sources,
        notes=_cores_notes(inputs, nthreads, sources["nthreads"], worker_hosts)
        + _memory_notes(inputs, ranks, sources["memory_limit"])
        + _gpu_notes(inputs, ranks)
        + _distributed_notes(inputs.distributed),
    )
