"""Which tasks no worker of the job can ever run (launcher/scheduler.py), without MPI."""

from launcher.scheduler import why_no_worker_can_run

WORKERS = [
    ("tcp://10.0.0.1:4000", "10.0.0.1", {"GPU": 1}),
    ("tcp://10.0.0.2:4000", "10.0.0.2", {}),
]


def why(workers=(), hosts=(), resources=None, job_workers=WORKERS):
    return why_no_worker_can_run(set(workers), set(hosts), resources or {}, job_workers)


def test_a_task_some_worker_can_run_is_left_to_distributed():
    assert why() is None
    assert why(resources={"GPU": 1}) is None
    assert why(workers=["tcp://10.0.0.2:4000"]) is None
    assert why(hosts=["10.0.0.1"], resources={"GPU": 1}) is None
    # distributed's union: a named worker or any worker on a named host
    assert why(workers=["tcp://10.0.0.9:1"], hosts=["10.0.0.2"]) is None


def test_resources_no_worker_has_say_what_the_workers_have():
    message = why(resources={"GPU": 2})
    wanted = "it needs resources {'GPU': 2}, and the workers have {'GPU': 1}"
    assert message.startswith(wanted), message
    assert "export DASK_DISTRIBUTED__WORKER__RESOURCES=\"{'GPU': 2}\"" in message
    assert "DASK_DISTRIBUTED__WORKER__RESOURCES__GPU=... would lower" in message
    message = why(resources={"mem": 1}, job_workers=WORKERS[1:])
    assert "the workers have none" in message and "would lower" not in message, message
    assert "ask Slurm for GPUs" not in message, message


def test_a_gpu_no_worker_has_asks_for_gpus_from_slurm():
    # Workers have a "GPU" for each GPU they use (the plan), so none means no GPU.
    message = why(resources={"GPU": 1}, job_workers=WORKERS[1:])
    assert "the workers have none; a worker has a 'GPU' for each GPU it uses" in message
    assert "ask Slurm for GPUs (#SBATCH --gpus-per-node=N), or give the workers" in message
    assert "ask Slurm" not in why(resources={"GPU": 2}), "some worker has a GPU"


def test_workers_and_hosts_not_in_the_job_name_where_the_workers_are():
    message = why(workers=["tcp://10.0.0.9:1"])
    assert "it may only run on tcp://10.0.0.9:1, and the job's 2 worker(s) are on " in message
    assert "10.0.0.1, 10.0.0.2 (a worker restarted by its nanny" in message, message
    message = why(hosts=["c5-1"])
    assert "it may only run on c5-1" in message and "restarted" not in message, message
    many = [(f"tcp://10.0.1.{i}:1", f"10.0.1.{i}", {}) for i in range(5)]
    assert "10.0.1.0, 10.0.1.1, 10.0.1.2 and 2 more" in why(hosts=["x"], job_workers=many)


def test_restrictions_that_only_fail_together_say_so():
    message = why(workers=["tcp://10.0.0.2:4000"], resources={"GPU": 1})
    assert "the workers it may run on lack resources {'GPU': 1}" in message, message
