"""Parsing what Slurm tells a job about itself (pure, no Slurm needed)."""

import pytest

from launcher.slurm import (
    MIB,
    SlurmEnvError,
    expand_nodelist,
    expand_tasks_per_node,
    read_allocation,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4", [4]),
        ("2(x3),1", [2, 2, 2, 1]),
        ("1(x2)", [1, 1]),
        ("16,8(x2),4", [16, 8, 8, 4]),
        (" 3 ", [3]),
    ],
)
def test_tasks_per_node_forms(value, expected):
    assert expand_tasks_per_node(value) == expected


@pytest.mark.parametrize("value", ["", "x", "2(x)", "2(3)", "2(x3", "-1"])
def test_tasks_per_node_rejects_garbage(value):
    with pytest.raises(SlurmEnvError, match="SLURM_TASKS_PER_NODE"):
        expand_tasks_per_node(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("n1", ["n1"]),
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("c1-[1-2,5]", ["c1-1", "c1-2", "c1-5"]),
        ("c[01-03]", ["c01", "c02", "c03"]),
        ("c1-[1-2],c2-1,gpu[7]", ["c1-1", "c1-2", "c2-1", "gpu7"]),
        ("a[1-2]b[3-4]", ["a1b3", "a1b4", "a2b3", "a2b4"]),
        ("b1101,b1102", ["b1101", "b1102"]),
    ],
)
def test_nodelist_expansion(value, expected):
    assert expand_nodelist(value) == expected


@pytest.mark.parametrize("value", ["n[1-", "n[3-1]", "n[a-b]"])
def test_nodelist_rejects_garbage(value):
    with pytest.raises(SlurmEnvError):
        expand_nodelist(value)


def test_outside_slurm_there_is_no_allocation():
    assert read_allocation({"HOME": "/root"}) is None


def test_saga_per_core_job_in_a_step():
    env = {
        "SLURM_JOB_ID": "123",
        "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "4",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_CPUS_PER_TASK": "2",
        "SLURM_MEM_PER_CPU": "500",
        "SLURM_JOB_NODELIST": "c5-[1-2]",
        "SLURM_TASKS_PER_NODE": "2(x2)",
        "SLURM_STEP_NODELIST": "c5-[1-2]",
        "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    }
    alloc = read_allocation(env)
    assert alloc.in_step and alloc.tasks == 4
    assert alloc.cpus_per_task == 2 and alloc.mem_per_cpu_mib == 500
    assert alloc.rank_nodes() == ["c5-1", "c5-1", "c5-2", "c5-2"]
    assert 500 * MIB == 524288000


def test_batch_script_is_not_a_step():
    alloc = read_allocation(
        {
            "SLURM_JOB_ID": "9",
            "SLURM_NTASKS": "8",
            "SLURM_TASKS_PER_NODE": "8",
            "SLURM_JOB_NODELIST": "b1",
        }
    )
    assert not alloc.in_step and alloc.tasks == 8
    assert alloc.rank_nodes() == ["b1"] * 8


def test_step_values_win_over_job_values():
    alloc = read_allocation(
        {
            "SLURM_JOB_ID": "9",
            "SLURM_NTASKS": "8",
            "SLURM_TASKS_PER_NODE": "4(x2)",
            "SLURM_JOB_NODELIST": "n[1-2]",
            "SLURM_STEP_NUM_TASKS": "1",
            "SLURM_STEP_TASKS_PER_NODE": "1",
            "SLURM_STEP_NODELIST": "n1",
        }
    )
    assert alloc.tasks == 1 and alloc.rank_nodes() == ["n1"]


def test_whole_node_job_without_memory_request():
    alloc = read_allocation(
        {
            "SLURM_JOB_ID": "1",
            "SLURM_NTASKS": "256",
            "SLURM_TASKS_PER_NODE": "128(x2)",
            "SLURM_JOB_NODELIST": "b[1-2]",
        }
    )
    assert alloc.mem_per_cpu_mib is None and alloc.mem_per_node_mib is None
    assert alloc.cpus_per_task is None
    assert alloc.rank_nodes().count("b2") == 128


def test_inconsistent_node_counts_are_an_error():
    with pytest.raises(SlurmEnvError, match="3 nodes"):
        read_allocation(
            {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n[1-3]", "SLURM_TASKS_PER_NODE": "2(x2)"}
        )


def test_non_numeric_value_is_named():
    with pytest.raises(SlurmEnvError, match="SLURM_CPUS_PER_TASK"):
        read_allocation({"SLURM_JOB_ID": "1", "SLURM_CPUS_PER_TASK": "two"})
