"""Reading the job's memory limit from cgroup trees laid out as Slurm lays them out."""

from pathlib import Path

import pytest

from launcher.hostfacts import _cgroup_limit, visible_gpus

GIB = 1024**3
V1_UNLIMITED = "9223372036854771712"


def tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")


def test_v2_limit_of_the_job_bounds_its_tasks(tmp_path):
    job = "system.slice/slurmstepd.scope/job_5"
    tree(
        tmp_path,
        {
            "memory.max": "max",  # not there at the root, but harmless
            f"{job}/memory.max": str(4 * GIB),
            f"{job}/step_0/memory.max": "max",
            f"{job}/step_0/user/task_1/memory.max": "max",
        },
    )
    assert _cgroup_limit(f"0::/{job}/step_0/user/task_1", tmp_path) == 4 * GIB


def test_v1_limit_of_the_job_bounds_its_tasks(tmp_path):
    """Slurm's cgroup v1 plugin limits the job's and the step's memory cgroups; the task's
    own shows the kernel's "unlimited"."""
    job = "memory/slurm/uid_1000/job_5"
    tree(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": V1_UNLIMITED,
            f"{job}/memory.limit_in_bytes": str(6 * GIB),
            f"{job}/step_0/memory.limit_in_bytes": str(5 * GIB),
            f"{job}/step_0/task_1/memory.limit_in_bytes": V1_UNLIMITED,
        },
    )
    proc = "12:pids:/slurm\n7:memory:/slurm/uid_1000/job_5/step_0/task_1\n0::/\n"
    assert _cgroup_limit(proc, tmp_path) == 5 * GIB


@pytest.mark.parametrize(
    "proc", ["0::/", "7:memory:/\n0::/", "4:cpu,cpuacct:/slurm\n", "garbage", ""]
)
def test_without_a_limit_there_is_none(tmp_path, proc):
    tree(tmp_path, {"memory.max": "max", "memory/memory.limit_in_bytes": V1_UNLIMITED})
    assert _cgroup_limit(proc, tmp_path) is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"CUDA_VISIBLE_DEVICES": ""}, ()),
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, ("0", "1", "2", "3")),
        ({"CUDA_VISIBLE_DEVICES": "GPU-8f2e, GPU-1a3b"}, ("GPU-8f2e", "GPU-1a3b")),
    ],
)
def test_visible_gpus_are_read_as_slurm_sets_them(env, expected):
    assert visible_gpus(env) == expected
