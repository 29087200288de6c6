"""Catching a launcher and an MPI library that do not belong together (pure)."""

from launcher.mpienv import (
    diagnose_launcher,
    diagnose_world,
    intended_rank,
    library_name,
    place_in_job,
)

MPICH = "MPICH Version:      5.0.2\nMPICH configure:    --with-pm=hydra:gforker\n"
MPICH_PMIX = "MPICH Version:      4.2.0\nMPICH configure:    --with-pmix=/usr\n"
OMPI = "Open MPI v5.0.11, package: Open MPI user@localhost Distribution\x00"


def test_library_name_is_one_tidy_line():
    assert library_name(MPICH) == "MPICH Version: 5.0.2"
    assert library_name(OMPI).startswith("Open MPI v5.0.11")


def test_matching_worlds_are_fine():
    assert diagnose_world({"PMI_SIZE": "4"}, 4, MPICH) is None
    assert diagnose_world({}, 1, MPICH) is None  # one process, no launcher
    assert diagnose_world({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}, 1, MPICH) is None
    assert diagnose_world({"SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "1"}, 1, MPICH) is None


def test_open_mpi_mpirun_with_another_library():
    message = diagnose_world({"OMPI_COMM_WORLD_SIZE": "4"}, 1, MPICH)
    assert "Open MPI's mpirun started 4 processes" in message and "MPICH" in message
    assert "Open MPI's mpirun started this process" in diagnose_launcher(
        {"OMPI_COMM_WORLD_SIZE": "4"}, MPICH
    )
    assert diagnose_launcher({"OMPI_COMM_WORLD_SIZE": "4"}, OMPI) is None


def test_srun_with_the_wrong_mpi_plugin():
    env = {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "4"}
    message = diagnose_world(env, 1, OMPI)
    assert "srun started 4 tasks" in message and "--mpi=pmix" in message
    pmix_env = {**env, "PMIX_RANK": "0"}
    assert "--mpi=pmi2" in diagnose_launcher(pmix_env, MPICH)
    assert diagnose_launcher(pmix_env, MPICH_PMIX) is None
    assert diagnose_launcher(pmix_env, OMPI) is None


def test_hydra_with_a_library_that_cannot_join():
    env = {"PMI_SIZE": "3", "PMI_RANK": "1", "MPI_LOCALNRANKS": "3"}
    assert "MPICH-style mpiexec started 3 processes" in diagnose_world(env, 1, OMPI)
    assert "MPICH's mpiexec (hydra)" in diagnose_launcher(env, OMPI)
    assert diagnose_launcher(env, MPICH) is None


def test_batch_script_without_srun():
    message = diagnose_world({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}, 1, MPICH)
    assert "has 8 tasks" in message and "srun python -m launcher" in message


def test_intended_rank_comes_from_the_launcher():
    assert intended_rank({"PMI_RANK": "3"}) == 3
    assert intended_rank({"OMPI_COMM_WORLD_RANK": "2", "SLURM_PROCID": "5"}) == 2
    assert intended_rank({"SLURM_PROCID": "5"}) == 5
    assert intended_rank({}) == 0


#: What each launcher added to a rank's environment here (mpirun -n 1 env, minus the
#: shell's), and what srun's plugins add; a worker process leaves all of it.
PLACED_BY = {
    "MPICH mpiexec": "HYDI_CONTROL_FD MPI_LOCALNRANKS MPI_LOCALRANKID PMI_FD PMI_HOSTNAME "
    "PMI_RANK PMI_SIZE",
    "Intel MPI mpiexec.hydra": "HYDRA_BSTRAP_UPSTREAM_FD HYDRA_BSTRAP_PROXY_ID "
    "MPI_LOCALNRANKS MPI_LOCALRANKID PMI_FD PMI_RANK PMI_SIZE",
    "Open MPI 5 mpirun": "OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE OMPI_UNIVERSE_SIZE "
    "OMPI_MCA_num_procs OMPI_MCA_initial_wdir PMIX_NAMESPACE PMIX_RANK PMIX_SERVER_URI41 "
    "PRTE_LAUNCHED",
    "Open MPI 4.1 mpirun": "OMPI_COMM_WORLD_RANK OMPI_MCA_ess OMPI_MCA_ess_base_jobid "
    "OMPI_MCA_orte_hnp_uri OMPI_MCA_orte_ess_num_procs OMPI_MCA_pmix PMIX_ID PMIX_RANK",
    "srun --mpi=pmi2": "PMI_FD PMI_JOBID PMI_RANK PMI_SIZE SLURM_STEP_ID SLURM_STEPID "
    "SLURM_STEP_NUM_TASKS SLURM_STEP_NODELIST",
    "srun --mpi=pmix": "PMIX_NAMESPACE PMIX_RANK PMIX_SERVER_URI2 SLURM_STEP_ID",
}
#: Settings of the user or site, and the job's own variables: a worker process keeps them.
KEPT = (
    "OMPI_MCA_btl OMPI_MCA_pml PMIX_MCA_gds PRTE_MCA_ras OMPI_ALLOW_RUN_AS_ROOT "
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM HYDRA_IFACE I_MPI_PMI_LIBRARY I_MPI_FABRICS "
    "SLURM_JOB_ID SLURM_PROCID SLURM_CPUS_PER_TASK SLURM_NODELIST MPI4PY_LIBMPI "
    "OPAL_PREFIX LD_LIBRARY_PATH PATH"
)


def test_a_worker_process_leaves_every_launchers_place_in_the_job():
    kept = dict.fromkeys(KEPT.split(), "x")
    for launcher, names in PLACED_BY.items():
        placed = dict.fromkeys(names.split(), "1")
        assert sorted(place_in_job({**kept, **placed})) == sorted(placed), launcher
