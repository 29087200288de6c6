"""Facts about the machine a rank runs on, gathered once per rank and sent to the planner.

Reading them is the only side effect here; deciding what they mean is the planner's job.
"""

from __future__ import annotations

import os
import socket
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

    def to_dict(self) -> dict:
        return asdict(self)


def _cgroup_v2_limit(proc_cgroup: str, root: Path) -> int | None:
    """Smallest ``memory.max`` on this process's cgroup v2 path.

    distributed's ``memory_limit="auto"`` reads only the top-level ``memory.max``, but a
    Slurm job lives in a nested cgroup (``/system.slice/slurmstepd.scope/job_N/...``), so
    "auto" sees the whole node. Walking our own path finds the job's limit.
    """
    for line in proc_cgroup.splitlines():
        hierarchy, _, path = line.partition("::")
        if hierarchy != "0":
            continue
        limits = []
        current = root / path.lstrip("/")
        while True:
            try:
                raw = (current / "memory.max").read_text().strip()
            except OSError:
                raw = "max"
            if raw.isdigit():
                limits.append(int(raw))
            if current == root or root not in current.parents:
                break
            current = current.parent
        return min(limits) if limits else None
    return None


def _cgroup_v1_limit(proc_cgroup: str, root: Path) -> int | None:
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):
            path = root / "memory" / parts[2].lstrip("/") / "memory.limit_in_bytes"
            try:
                value = int(path.read_text().strip())
            except (OSError, ValueError):
                return None
            return value if value < _UNLIMITED else None
    return None


def usable_memory(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """RAM this process may use: total memory capped by its own cgroup's limit."""
    total = psutil.virtual_memory().total
    try:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        return total
    limits = [
        limit
        for limit in (
            _cgroup_v2_limit(proc_cgroup, cgroup_root),
            _cgroup_v1_limit(proc_cgroup, cgroup_root),
        )
        if limit
    ]
    return min([total, *limits])


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
    )
