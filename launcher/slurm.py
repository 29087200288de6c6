"""What a Slurm allocation says about itself, read from the ``SLURM_*`` environment.

Pure parsing, no side effects: the planner combines this with MPI and host facts.
Slurm reports memory in MiB ("M" in Slurm's units is 1024**2 bytes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MIB = 1024**2


class SlurmEnvError(ValueError):
    """A ``SLURM_*`` variable that Slurm would never produce."""


@dataclass(frozen=True)
class Allocation:
    """The parts of a Slurm job (and step, inside ``srun``) that size a Dask cluster."""

    job_id: str
    step_id: str | None
    ntasks: int | None
    step_tasks: int | None
    cpus_per_task: int | None
    mem_per_cpu_mib: int | None
    mem_per_node_mib: int | None
    nodes: tuple[str, ...]
    tasks_per_node: tuple[int, ...]

    @property
    def in_step(self) -> bool:
        """True inside ``srun`` (a job step), False in the batch script itself."""
        return self.step_tasks is not None

    @property
    def tasks(self) -> int | None:
        """How many tasks this step (or, outside a step, the job) runs."""
        return self.step_tasks if self.step_tasks is not None else self.ntasks

    def rank_nodes(self) -> list[str]:
        """Node of each task under Slurm's default block distribution."""
        names = list(self.nodes) or [f"node{i}" for i in range(len(self.tasks_per_node))]
        out: list[str] = []
        for name, count in zip(names, self.tasks_per_node, strict=False):
            out.extend([name] * count)
        return out


def expand_tasks_per_node(value: str) -> list[int]:
    """Expand ``SLURM_TASKS_PER_NODE`` forms such as ``4`` and ``2(x3),1``."""
    counts: list[int] = []
    for part in value.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:\(x(\d+)\))?\s*", part)
        if not match:
            raise SlurmEnvError(f"SLURM_TASKS_PER_NODE={value!r}: cannot parse {part!r}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def _split_top_level(value: str) -> list[str]:
    """Split on commas that are not inside brackets (``a[1-2],b`` → ``a[1-2]``, ``b``)."""
    parts, depth, current = [], 0, ""
    for char in value:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise SlurmEnvError(f"unbalanced brackets in node list {value!r}")
    parts.append(current)
    return [p for p in parts if p]


def _expand_range(spec: str, nodelist: str) -> list[str]:
    out: list[str] = []
    for item in spec.split(","):
        if "-" in item:
            low, high = item.split("-", 1)
            if not (low.isdigit() and high.isdigit()) or int(high) < int(low):
                raise SlurmEnvError(f"bad range {item!r} in node list {nodelist!r}")
            out.extend(str(i).zfill(len(low)) for i in range(int(low), int(high) + 1))
        elif item.isdigit():
            out.append(item)
        else:
            raise SlurmEnvError(f"bad range {item!r} in node list {nodelist!r}")
    return out


def expand_nodelist(value: str) -> list[str]:
    """Expand a Slurm host list such as ``c1-[1-3,07],gpu2``, like ``scontrol show hostnames``."""
    hosts: list[str] = []
    for part in _split_top_level(value.strip()):
        names = [""]
        for literal, bracket in re.findall(r"([^\[\]]*)(?:\[([^\]]*)\])?", part):
            if not literal and not bracket:
                continue
            suffixes = _expand_range(bracket, value) if bracket else [""]
            names = [n + literal + s for n in names for s in suffixes]
        hosts.extend(names)
    return hosts


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    # SLURM_CPUS_PER_TASK and friends are plain integers; SLURM_MEM_* too (MiB).
    if not raw.strip().isdigit():
        raise SlurmEnvError(f"{name}={raw!r} is not a whole number")
    return int(raw)


def read_allocation(env: Mapping[str, str]) -> Allocation | None:
    """The allocation this process runs in, or None outside Slurm."""
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        return None
    step_tasks = _int(env, "SLURM_STEP_NUM_TASKS")
    ntasks = _int(env, "SLURM_NTASKS")
    nodelist = env.get("SLURM_STEP_NODELIST") if step_tasks else None
    nodelist = nodelist or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    tasks_raw = env.get("SLURM_STEP_TASKS_PER_NODE") if step_tasks else None
    tasks_raw = tasks_raw or env.get("SLURM_TASKS_PER_NODE") or ""
    tasks_per_node = expand_tasks_per_node(tasks_raw) if tasks_raw else []
    nodes = expand_nodelist(nodelist) if nodelist else []
    if nodes and tasks_per_node and len(nodes) != len(tasks_per_node):
        raise SlurmEnvError(
            f"node list {nodelist!r} has {len(nodes)} nodes but tasks per node "
            f"{tasks_raw!r} describes {len(tasks_per_node)}"
        )
    if not tasks_per_node:
        tasks = step_tasks or ntasks or 1
        tasks_per_node = [tasks] if len(nodes) <= 1 else []
    return Allocation(
        job_id=job_id,
        step_id=env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID") or None,
        ntasks=ntasks,
        step_tasks=step_tasks,
        cpus_per_task=_int(env, "SLURM_CPUS_PER_TASK"),
        mem_per_cpu_mib=_int(env, "SLURM_MEM_PER_CPU"),
        mem_per_node_mib=_int(env, "SLURM_MEM_PER_NODE"),
        nodes=tuple(nodes),
        tasks_per_node=tuple(tasks_per_node),
    )
