"""The planner over many jobs: roles, threads, memory, directories, interface, sources."""

import json

import pytest

from launcher.config import PACKAGE_DEFAULTS, Setting
from launcher.hostfacts import HostFacts
from launcher.options import Options, Target
from launcher.plan import PlanError, PlanInputs, hosts_a_nanny, is_a_worker_rank, make_plan
from launcher.slurm import MIB

GIB = 1024**3


def facts(host="n1", memory=64 * GIB, interfaces=None, cpus=8):
    return HostFacts(
        0, host, memory, cpus, interfaces or {"lo": ["127.0.0.1"], "eth0": ["10.0.0.1"]}
    )


def defaults(**overrides):
    settings = {k: Setting(v, "default") for k, v in PACKAGE_DEFAULTS["launcher"].items()}
    for key, value in overrides.items():
        settings[key.replace("_", "-")] = Setting(value, "config /etc/dask/site.yaml")
    return settings


def plan_for(
    env=None,
    hosts=("n1",) * 4,
    host_facts=None,
    options=None,
    settings=None,
    gpus=(),
    distributed=None,
):
    host_facts = host_facts or {h: facts(h) for h in hosts}
    return make_plan(
        PlanInputs(
            env=env or {},
            rank_hosts=tuple(hosts),
            facts=host_facts,
            settings=settings or defaults(),
            options=options or Options(),
            run_id="t1",
            cwd="/home/me/job",
            rank_gpus=tuple(gpus),
            distributed=distributed or {},
        )
    )


def test_compact_layout_gives_every_other_rank_a_worker():
    plan = plan_for()
    assert plan.layout == "compact"
    assert plan.ranks[0].roles == ("scheduler", "client")
    assert [r.rank for r in plan.workers] == [1, 2, 3]
    assert plan.scheduler_rank == plan.client_rank == 0
    assert not plan.stdin_through_scheduler


def test_dedicated_layout_is_dask_mpis_classic():
    plan = plan_for(options=Options(layout="dedicated"))
    assert plan.ranks[0].roles == ("scheduler",) and plan.ranks[1].roles == ("client",)
    assert [r.rank for r in plan.workers] == [2, 3]
    assert plan.sources["layout"] == "flag --layout"
    assert plan.stdin_through_scheduler  # mpirun gives rank 0 the input


def test_one_process_runs_everything():
    plan = plan_for(hosts=("n1",))
    assert plan.layout == "single-process"
    assert plan.ranks[0].roles == ("scheduler", "client", "worker")
    assert len(plan.workers) == 1
    assert not plan.stdin_through_scheduler


@pytest.mark.parametrize(("layout", "size"), [("dedicated", 2), ("dedicated", 1)])
def test_too_few_ranks_for_a_layout(layout, size):
    with pytest.raises(PlanError, match=f"needs at least 3 MPI ranks.*has {size}"):
        plan_for(hosts=("n1",) * size, options=Options(layout=layout))


def test_dedicated_from_site_config_names_the_file():
    with pytest.raises(PlanError, match=r"config /etc/dask/site\.yaml"):
        plan_for(hosts=("n1",) * 2, settings=defaults(layout="dedicated"))


def test_saga_per_core_sizing():
    env = {
        "SLURM_JOB_ID": "5",
        "SLURM_CPUS_PER_TASK": "4",
        "SLURM_MEM_PER_CPU": "2000",
        "SLURM_NTASKS": "4",
    }
    plan = plan_for(env=env)
    assert {w.nthreads for w in plan.workers} == {4}
    assert {w.memory_limit for w in plan.workers} == {4 * 2000 * MIB}
    assert plan.sources["nthreads"] == "env SLURM_CPUS_PER_TASK"
    assert "SLURM_MEM_PER_CPU" in plan.sources["memory_limit"]


def test_mem_per_node_is_shared_by_the_tasks_on_each_node():
    env = {"SLURM_JOB_ID": "5", "SLURM_MEM_PER_NODE": "6000"}
    hosts = ("a", "a", "a", "b", "b", "c")  # like SLURM_TASKS_PER_NODE=3,2,1
    plan = plan_for(env=env, hosts=hosts)
    by_host = {w.host: w.memory_limit for w in plan.workers}
    assert by_host == {"a": 2000 * MIB, "b": 3000 * MIB, "c": 6000 * MIB}
    assert json.loads(plan.to_json())["settings"]["memory_limit"]["value"] == "per node, see ranks"


def test_whole_node_job_divides_the_nodes_memory_never_auto():
    env = {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "4"}  # Betzy: no memory directive
    plan = plan_for(env=env, host_facts={"n1": facts(memory=244 * GIB)})
    assert {w.memory_limit for w in plan.workers} == {61 * GIB}
    assert plan.sources["memory_limit"].startswith("node memory / ranks")


def test_outside_slurm_one_thread_and_a_share_of_the_machine():
    plan = plan_for(host_facts={"n1": facts(memory=24 * GIB)})
    assert {w.nthreads for w in plan.workers} == {1}
    assert {w.memory_limit for w in plan.workers} == {6 * GIB}
    assert plan.sources["nthreads"].startswith("default")


def test_flags_beat_config_beat_allocation():
    env = {"SLURM_JOB_ID": "5", "SLURM_CPUS_PER_TASK": "4", "SLURM_MEM_PER_CPU": "1000"}
    by_config = plan_for(env=env, settings=defaults(nthreads=2, memory_limit=3 * GIB))
    assert by_config.workers[0].nthreads == 2 and by_config.workers[0].memory_limit == 3 * GIB
    assert by_config.sources["nthreads"] == "config /etc/dask/site.yaml"
    by_flag = plan_for(
        env=env, settings=defaults(nthreads=2), options=Options(nthreads=8, memory_limit=GIB)
    )
    assert by_flag.workers[0].nthreads == 8 and by_flag.workers[0].memory_limit == GIB
    assert by_flag.sources["memory_limit"] == "flag --memory-limit"


@pytest.mark.parametrize(
    ("env", "base", "source"),
    [
        (
            {"LOCALSCRATCH": "/localscratch/7", "SLURM_TMPDIR": "/s", "TMPDIR": "/t"},
            "/localscratch/7",
            "env LOCALSCRATCH",
        ),
        ({"SLURM_TMPDIR": "/s", "TMPDIR": "/t"}, "/s", "env SLURM_TMPDIR"),
        ({"TMPDIR": "/t"}, "/t", "env TMPDIR"),
        ({}, "/tmp", "default (no $LOCALSCRATCH, $SLURM_TMPDIR or $TMPDIR)"),
        ({"LOCALSCRATCH": ""}, "/tmp", "default (no $LOCALSCRATCH, $SLURM_TMPDIR or $TMPDIR)"),
    ],
)
def test_local_directory_prefers_node_local_scratch(env, base, source):
    plan = plan_for(env=env)
    assert plan.run_directory == f"{base}/dask-launcher-t1"
    assert plan.sources["local_directory"] == source
    assert [w.local_directory for w in plan.workers] == [
        f"{base}/dask-launcher-t1/worker-{r}" for r in (1, 2, 3)
    ]


def test_local_directory_flag():
    plan = plan_for(env={"LOCALSCRATCH": "/ls"}, options=Options(local_directory="/scratch/me"))
    assert plan.run_directory.startswith("/scratch/me/")


@pytest.mark.parametrize(
    "configured, base",
    [
        ("$LOCALSCRATCH/dask", "/localscratch/7/dask"),
        ("${USERWORK}/spill", "/cluster/work/users/me/spill"),
        ("~/spill", "/home/me/spill"),
        ("~", "/home/me"),
        ("~root/spill", "/root/spill"),
        ("spill", "/home/me/job/spill"),
        ("../spill/", "/home/me/spill"),
    ],
)
def test_local_directory_from_a_site_config_expands_like_a_shell(configured, base):
    env = {"LOCALSCRATCH": "/localscratch/7", "USERWORK": "/cluster/work/users/me"}
    plan = plan_for(env=env | {"HOME": "/home/me"}, settings=defaults(local_directory=configured))
    assert plan.run_directory == f"{base}/dask-launcher-t1"
    assert plan.sources["local_directory"] == "config /etc/dask/site.yaml"


@pytest.mark.parametrize("configured", ["$LOCALSCRATCH/dask", "${LOCALSCRATCH}", "~/spill"])
def test_local_directory_naming_a_variable_the_job_lacks_is_one_line(configured):
    with pytest.raises(PlanError) as err:
        plan_for(env={"LOCALSCRATCH": ""}, settings=defaults(local_directory=configured))
    name = "HOME" if configured.startswith("~") else "LOCALSCRATCH"
    assert str(err.value) == (
        f"local directory {configured!r} (config /etc/dask/site.yaml) uses ${name}, which "
        "is not set in this job: set it, or point --local-directory at a directory"
    )


@pytest.mark.parametrize(
    "cpus, options, noted",
    [(1, Options(), True), (4, Options(), False), (1, Options(nthreads=4), False)],
)
def test_workers_bound_to_fewer_cores_than_they_get_threads_are_noted(cpus, options, noted):
    """A plain srun on Slurm 22.05/23.02 binds each task to one core whatever sbatch's
    --cpus-per-task; the workers still get that many threads. A --nthreads the user
    chose is theirs to keep."""
    env = {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "4", "SLURM_NTASKS": "4"}
    hosts = ("n1", "n1", "n2", "n2")
    host_facts = {"n1": facts("n1", cpus=8), "n2": facts("n2", cpus=cpus)}
    plan = plan_for(env=env, hosts=hosts, host_facts=host_facts, options=options)
    assert plan.workers[0].nthreads == 4
    expected = (
        "worker ranks may run on 1 CPU(s) (on n2) but get 4 threads each (env "
        "SLURM_CPUS_PER_TASK): start them with srun --cpus-per-task=$SLURM_CPUS_PER_TASK "
        "(Slurm 22.05 and 23.02 do not pass sbatch's on to srun; the launcher's jobscripts do)"
    )
    assert plan.notes == ((expected,) if noted else ())
    assert json.loads(plan.to_json())["notes"] == list(plan.notes)


@pytest.mark.parametrize(
    "options, settings, noted",
    [
        (Options(memory_limit=4 * GIB), defaults(), "flag --memory-limit"),
        (Options(), defaults(memory_limit=4 * GIB), "config /etc/dask/site.yaml"),
        (Options(memory_limit=GIB), defaults(), None),
        (Options(), defaults(), None),
    ],
)
def test_memory_limits_over_what_the_job_may_use_on_a_node_are_noted(options, settings, noted):
    """The kernel kills workers whose limits add up to more than the node's cgroup
    allows before Dask spills (measured: --memory-limit 4GiB in a 2-GiB cgroup, every
    worker SIGKILLed by the OOM killer); derived limits divide what there is."""
    hosts = ("n1", "n2", "n2", "n2")
    host_facts = {"n1": facts("n1", memory=64 * GIB), "n2": facts("n2", memory=10 * GIB)}
    plan = plan_for(hosts=hosts, host_facts=host_facts, options=options, settings=settings)
    expected = (
        "worker memory limits add up to 12.00 GiB on n2 (3 x 4.00 GiB, "
        f"{noted}) but the job may use 10.00 GiB there: the kernel would kill workers "
        "before Dask could spill their data; give them at most 3.33 GiB each, or ask "
        "Slurm for more memory"
    )
    assert plan.notes == ((expected,) if noted else ())


@pytest.mark.parametrize(
    "env, options, settings, host_facts, said",
    [
        ({}, Options(memory_limit=4), defaults(), None, r"4 B .*\(flag --memory-limit\).*4GiB"),
        (
            {},
            Options(),
            defaults(memory_limit=68 * MIB),
            None,
            r"68.00 MiB .*\(config /etc/dask/site\.yaml\).*such as 4GiB",
        ),
        (
            {"SLURM_JOB_ID": "5", "SLURM_MEM_PER_CPU": "100"},
            Options(),
            defaults(),
            None,
            r"100.00 MiB .*SLURM_MEM_PER_CPU.*ask Slurm for more memory per task",
        ),
        ({}, Options(), defaults(), {"n1": facts(memory=GIB)}, r"102.40 MiB .*node memory"),
    ],
)
def test_a_memory_limit_too_small_for_a_worker_stops_the_job(
    env, options, settings, host_facts, said
):
    """Dask reads --memory-limit 4 as 4 bytes: every task failed with KilledWorker as
    the nannies restarted their workers over and over; at 68 MiB the workers paused at
    their start and the job waited for its walltime."""
    hosts = ("n1",) * (4 if host_facts is None else 10)  # 10 ranks on a 1-GiB machine
    with pytest.raises(PlanError, match=rf"^workers would get {said}"):
        plan_for(env=env, hosts=hosts, host_facts=host_facts, options=options, settings=settings)


def test_the_smallest_memory_limit_a_worker_can_run_with_passes():
    plan = plan_for(options=Options(memory_limit=128 * MIB))
    assert {w.memory_limit for w in plan.workers} == {128 * MIB}


def test_paused_timeout_comes_from_the_config_with_its_source():
    assert (plan_for().paused_timeout, plan_for().sources["paused_timeout"]) == (30, "default")
    plan = plan_for(settings=defaults(paused_timeout=5))
    assert plan.paused_timeout == 5
    setting = json.loads(plan.to_json())["settings"]["paused_timeout"]
    assert setting == {"value": 5, "source": "config /etc/dask/site.yaml"}


@pytest.mark.parametrize("variable", ["SLURM_GPUS_PER_TASK", "SLURM_GPU_BIND"])
def test_gpus_slurm_bound_to_tasks_are_left_as_they_are(variable):
    # With devices constrained per task, each task's own GPUs may all be called "0,1".
    plan = plan_for(env={variable: "2"}, hosts=("n1",) * 3, gpus=[("0", "1")] * 3)
    assert [w.gpus for w in plan.workers] == [None, None]
    assert plan.sources["gpus"] == f"as Slurm bound them to tasks (env {variable})"


FOUR = ("0", "1", "2", "3")


@pytest.mark.parametrize(
    ("hosts", "gpus", "layout", "expected", "uneven"),
    [
        # --gpus-per-node=4 --ntasks-per-node=5: one GPU for each of the 4 workers
        (("n1",) * 5, [FOUR] * 5, None, [("0",), ("1",), ("2",), ("3",)], None),
        # two workers: two GPUs each
        (("n1",) * 3, [FOUR] * 3, None, [("0", "1"), ("2", "3")], None),
        # more workers than GPUs: in turn
        (
            ("n1",) * 4,
            [("0", "1")] * 4,
            None,
            [("0",), ("1",), ("0",)],
            "3 workers on n1 share its 2 GPUs unevenly (two workers to a GPU): start as "
            "many worker tasks as GPUs on each node (task 0 runs the scheduler and your "
            "script), or bind GPUs to tasks with --gpus-per-task",
        ),
        # fewer, not a divisor: one idle
        (
            ("n1",) * 4,
            [FOUR] * 4,
            None,
            [("0",), ("1",), ("2",)],
            "3 workers on n1 share its 4 GPUs unevenly (GPU 3 idle): start as many worker "
            "tasks as GPUs on each node (task 0 runs the scheduler and your script), or "
            "bind GPUs to tasks with --gpus-per-task",
        ),
        # per node, on two nodes; the dedicated layout's rank 1 is the client
        (
            ("n1", "n1", "n1", "n1", "n2", "n2"),
            [("5", "7")] * 4 + [FOUR] * 2,
            "dedicated",
            [("5",), ("7",), ("0", "1"), ("2", "3")],
            None,
        ),
        # Slurm gave each task its own (--gpus-per-task): left as they are
        (("n1",) * 3, [FOUR, ("0",), ("1",)], None, [None, None], None),
        # one GPU, one worker on a node, or none visible: left as they are
        (("n1",) * 3, [("0",)] * 3, None, [None, None], None),
        (("n1", "n2"), [FOUR] * 2, None, [None], None),
        (("n1",) * 3, [None] * 3, None, [None, None], None),
        (("n1",) * 3, [()] * 3, None, [None, None], None),
        (("n1",) * 3, [], None, [None, None], None),  # not known (no facts)
    ],
)
def test_a_nodes_gpus_are_shared_out_among_its_workers(hosts, gpus, layout, expected, uneven):
    """Slurm's --gpus-per-node gives every task all of the node's GPUs, and every
    worker ran on the first; as dask-cuda does, each worker gets its own share."""
    plan = plan_for(hosts=hosts, gpus=gpus, options=Options(layout=layout))
    assert [w.gpus for w in plan.workers] == expected
    assert all(r.gpus is None for r in plan.ranks if not r.is_worker)  # the user's code's
    data = json.loads(plan.to_json())
    shared = any(expected)
    assert data["settings"]["gpus"] == {
        "value": "per worker, see ranks" if shared else None,
        "source": "env CUDA_VISIBLE_DEVICES shared out among the node's workers"
        if shared
        else "as each task sees them (env CUDA_VISIBLE_DEVICES, if set)",
    }
    assert [r.get("gpus") for r in data["ranks"] if "worker" in r["roles"]] == [
        list(g) if g else None for g in expected
    ]
    assert plan.notes == ((uneven,) if uneven else ())


@pytest.mark.parametrize(
    ("gpus", "declared", "expected", "source"),
    [
        # shared out: each worker has as many "GPU" as it uses
        ([FOUR] * 3, {}, [{"GPU": 2}, {"GPU": 2}], "GPU: the GPUs each worker uses"),
        # bound to tasks by Slurm, one worker without: what it sees
        (
            [FOUR, ("0",), ()],
            {"MEM": 5},
            [{"GPU": 1, "MEM": 5}, {"MEM": 5}],
            "GPU: the GPUs each worker uses; the rest distributed.worker.resources in the "
            "Dask config",
        ),
        # the config's count wins
        (
            [FOUR] * 3,
            {"GPU": 1},
            [{"GPU": 1}] * 2,
            "distributed.worker.resources in the Dask config",
        ),
        # no GPU: left to the config, which each worker reads itself
        ([()] * 3, {"MEM": 5}, [None, None], "distributed.worker.resources in the Dask config"),
        ([None] * 3, {}, [None, None], "none declared"),
    ],
)
def test_workers_with_gpus_have_a_gpu_resource_for_each(gpus, declared, expected, source):
    """A dask-jobqueue GPU worker was started with --resources GPU=1, and its scripts
    submit with resources={"GPU": 1}; in a job no worker had it and those tasks failed."""
    plan = plan_for(
        hosts=("n1",) * 3, gpus=gpus, distributed={"distributed.worker.resources": declared}
    )
    assert [w.resources for w in plan.workers] == expected
    assert plan.ranks[0].resources is None  # the scheduler's and the script's rank
    assert plan.sources["resources"] == source
    data = json.loads(plan.to_json())
    assert data["settings"]["resources"]["value"] == (
        "per worker, see ranks" if any(expected) else None
    )
    assert [r.get("resources") for r in data["ranks"][1:]] == expected


LIFETIME = "distributed.worker.lifetime.duration (1 hour) in your Dask config closes every"
IDLE = "distributed.scheduler.idle-timeout (10 minutes) in your Dask config ends the job"


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"distributed.worker.lifetime.duration": "1 hour"}, [LIFETIME]),
        (
            {
                "distributed.worker.lifetime.duration": "1 hour",
                "distributed.worker.lifetime.restart": True,  # the nannies start new ones
                "distributed.scheduler.idle-timeout": "10 minutes",
            },
            [IDLE],
        ),
        ({"distributed.worker.lifetime.duration": None}, []),
    ],
)
def test_distributed_settings_that_end_a_job_are_said_before_it_starts(settings, said):
    """A worker lifetime or a scheduler idle-timeout kept in a Dask config from other
    clusters ends the job hours into it; --check and the job's first lines say so."""
    plan = plan_for(hosts=("n1",) * 3, distributed=settings)
    assert len(plan.notes) == len(said), plan.notes
    for note, start in zip(plan.notes, said, strict=True):
        assert note.startswith(start) and "drop the setting" in note, note


def test_interface_must_exist_on_every_host():
    hosts = ("n1", "n1", "n2")
    good = {"lo": ["127.0.0.1"], "ib0": ["10.1.0.1"]}
    bad = {"lo": ["127.0.0.1"], "eth0": ["10.0.0.2"]}
    plan = plan_for(
        hosts=hosts[:2],
        host_facts={"n1": facts("n1", interfaces=good)},
        options=Options(interface="ib0"),
    )
    assert plan.interface == "ib0" and plan.sources["interface"] == "flag --interface"
    with pytest.raises(
        PlanError,
        match=r"'ib0' \(flag --interface\) does not exist on n2; "
        r"interfaces there: eth0, lo",
    ):
        plan_for(
            hosts=hosts,
            options=Options(interface="ib0"),
            host_facts={"n1": facts("n1", interfaces=good), "n2": facts("n2", interfaces=bad)},
        )


def test_interface_without_an_address():
    ifaces = {"lo": ["127.0.0.1"], "ib0": []}
    with pytest.raises(PlanError, match=r"'ib0' .* has no IPv4 address; interfaces with one: lo"):
        plan_for(host_facts={"n1": facts(interfaces=ifaces)}, settings=defaults(interface="ib0"))


def test_dashboard_and_timeouts():
    plan = plan_for(options=Options(dashboard=False, startup_timeout=12.0))
    assert plan.dashboard is False and plan.sources["dashboard"] == "flag --no-dashboard"
    assert plan.startup_timeout == 12.0 and plan.shutdown_timeout == 3
    assert plan.dashboard_address == ":8787"


def test_plan_json_names_every_value_and_its_source():
    env = {"SLURM_JOB_ID": "5", "SLURM_CPUS_PER_TASK": "2", "SLURM_MEM_PER_CPU": "100"}
    data = json.loads(
        plan_for(env=env, options=Options(target=Target("script", "a.py", ("x",)))).to_json()
    )
    assert data["mpi_size"] == 4 and data["layout"] == "compact" and data["workers"] == 3
    for name in ("nthreads", "memory_limit", "local_directory", "interface", "layout"):
        assert set(data["settings"][name]) == {"value", "source"}
    assert data["settings"]["memory_limit"]["value"] == 200 * MIB
    assert data["ranks"][1] == {
        "rank": 1,
        "host": "n1",
        "roles": ["worker"],
        "nthreads": 2,
        "memory_limit": 200 * MIB,
        "local_directory": "/tmp/dask-launcher-t1/worker-1",
    }
    assert data["target"] == {"kind": "script", "name": "a.py", "argv": ["x"]}


@pytest.mark.parametrize(
    ("env", "options", "nanny", "worker_rank"),
    [
        ({}, Options(), True, False),  # one process: its worker runs under a nanny
        ({"PMI_RANK": "0", "PMI_SIZE": "4"}, Options(), False, False),  # scheduler, client
        ({"PMI_RANK": "1", "PMI_SIZE": "4"}, Options(), True, True),
        ({"PMI_RANK": "1", "PMI_SIZE": "4"}, Options(layout="dedicated"), False, False),
        (
            {"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "4"},
            Options(layout="dedicated"),
            True,
            True,
        ),
        (
            {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"},
            Options(nanny=False),
            False,
            True,
        ),
    ],
)
def test_which_ranks_run_a_worker_and_a_nanny_is_known_before_mpi(env, options, nanny, worker_rank):
    assert hosts_a_nanny(env, options, defaults()) is nanny
    assert is_a_worker_rank(env, options, defaults()) is worker_rank
