"""Facts about the machine a rank runs on, gathered once per rank and sent to the planner.

Reading them is the only side effect here; deciding what they mean is the planner's job.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

_UNLIMITED = 2**60


@dataclass(frozen=True)
class HostFacts:
    """What one rank sees of its node."""

    rank: int
    hostname: str
    memory_bytes: int
    #: CPUs this rank may run on: its affinity, which srun or mpirun may have narrowed
    #: to fewer than the node has.
    cpus: int
    interfaces: dict[str, list[str]] = field(default_factory=dict)
    #: The GPUs this rank may use (CUDA_VISIBLE_DEVICES); None: the variable is unset.
    gpus: tuple[str, ...] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _smallest_on_path(top: Path, path: str, filename: str) -> int | None:
    """Smallest limit in ``filename`` from this process's cgroup up to the hierarchy's top.

    A limit anywhere above a cgroup bounds it. Slurm sets the job's (and the step's)
    but puts each task in a cgroup of its own below, with none of its own: reading only
    our own cgroup, like distributed's ``memory_limit="auto"`` reading only the top's,
    sees the whole node.
    """
    limits = []
    current = top / path.lstrip("/")
    while True:
        try:
            raw = (current / filename).read_text().strip()
        except OSError:
            raw = "max"
        if raw.isdigit() and int(raw) < _UNLIMITED:
            limits.append(int(raw))
        if current == top or top not in current.parents:
            break
        current = current.parent
    return min(limits) if limits else None


def _cgroup_limit(proc_cgroup: str, root: Path) -> int | None:
    """The job's memory limit, from the v2 hierarchy and v1's memory controller."""
    limits = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and not controllers:
            limits.append(_smallest_on_path(root, path, "memory.max"))
        elif "memory" in controllers.split(","):
            limits.append(_smallest_on_path(root / "memory", path, "memory.limit_in_bytes"))
    return min((limit for limit in limits if limit), default=None)


def usable_memory(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """RAM this process may use: total memory capped by its own cgroup's limit."""
    total = psutil.virtual_memory().total
    try:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        return total
    return min(total, _cgroup_limit(proc_cgroup, cgroup_root) or total)


def ipv4_interfaces() -> dict[str, list[str]]:
    """Every network interface with its IPv4 addresses (possibly none)."""
    return {
        name: [a.address for a in addrs if a.family == socket.AF_INET]
        for name, addrs in psutil.net_if_addrs().items()
    }


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # no affinity to read (macOS): the machine's


def gather_local(rank: int) -> HostFacts:
    return HostFacts(
        rank=rank,
        hostname=socket.gethostname(),
        memory_bytes=usable_memory(),
        cpus=_usable_cpus(),
        interfaces=ipv4_interfaces(),
        gpus=visible_gpus(os.environ),
    )


def visible_gpus(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """Slurm sets CUDA_VISIBLE_DEVICES to the GPUs of a task's allocation (each task the
    node's GPUs of the step, unless --gpus-per-task or --gpu-bind gave each its own)."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return tuple(gpu.strip() for gpu in value.split(",") if gpu.strip())
