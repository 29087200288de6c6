"""Does the MPI world match what the process launcher started?

When mpi4py's MPI library cannot talk to the launcher (mpi4py built against another
MPI, or ``srun`` with the wrong ``--mpi`` plugin), every process comes up as rank 0 of
a world of one and would start a cluster of its own. The launcher's environment
variables still tell how many processes were meant to be one job; comparing the two
catches the mistake before anything starts. Pure: reads only the mapping it is given,
except ``close_pmi_connection`` and ``leave_mpi_job``, for the processes a rank starts
that are not ranks themselves.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping


def _count(env: Mapping[str, str], name: str) -> int:
    raw = env.get(name, "")
    return int(raw) if raw.strip().isdigit() else 0


def intended_rank(env: Mapping[str, str]) -> int:
    """The rank a launcher gave this process, even when MPI did not pick it up."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if env.get(name, "").strip().isdigit():
            return int(env[name])
    return 0


def launched_size(env: Mapping[str, str]) -> int:
    """How many processes the launcher that started us started (1 if none did)."""
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"):
        if _count(env, name) > 0:
            return _count(env, name)
    return 1


def close_pmi_connection() -> None:
    """In a process forked from a rank before MPI_Init: let go of the rank's PMI
    connection, which hydra and slurmstepd watch to see the rank go."""
    pmi_fd = os.environ.get("PMI_FD", "")
    if pmi_fd.isdigit():
        with contextlib.suppress(OSError):
            os.close(int(pmi_fd))


#: Variables an MPI process launcher (mpirun, mpiexec.hydra, srun's MPI plugins) gives
#: each process it starts to tell it its place in the job. Settings a user or site made
#: share some prefixes and are kept: OMPI_MCA_*, PMIX_MCA_*, PRTE_MCA_*, HYDRA_* (what
#: a nested mpiexec reads), OMPI_ALLOW_RUN_AS_ROOT*. Slurm's SLURM_STEP_* too: Open MPI
#: 4 takes a process in a job step that finds no PMIx server for one that srun failed
#: to start, and aborts ("direct launched using srun, but OMPI was not built with
#: SLURM's PMI support"); the job's variables (SLURM_JOB_ID, ...) stay.
_PLACE_PREFIXES = (
    "PMI_",
    "PMI2_",
    "PMIX_",
    "PRTE_",
    "HYDI_",
    "HYDRA_BSTRAP_",
    "OMPI_",
    "SLURM_STEP",
)
_PLACE_NAMES = ("MPI_LOCALRANKID", "MPI_LOCALNRANKS")
_SETTING_PREFIXES = ("OMPI_MCA_", "PMIX_MCA_", "PRTE_MCA_", "OMPI_ALLOW_RUN_AS_ROOT")
#: Open MPI 4's mpirun also passes the place as MCA settings of its runtime.
_PLACE_MCA_PREFIXES = (
    "OMPI_MCA_ess",
    "OMPI_MCA_orte_",
    "OMPI_MCA_pmix",
    "OMPI_MCA_num_procs",
    "OMPI_MCA_initial_wdir",
)


def place_in_job(env: Mapping[str, str]) -> list[str]:
    """The names in ``env`` that tell an MPI library it is one rank of a launched job."""
    return [
        name
        for name in env
        if name.startswith(_PLACE_MCA_PREFIXES)
        or name in _PLACE_NAMES
        or (name.startswith(_PLACE_PREFIXES) and not name.startswith(_SETTING_PREFIXES))
    ]


def leave_mpi_job() -> None:
    """Forget this process's place in the MPI job: in a rank once MPI_Init has read it,
    and in a Dask worker process (started by its rank's nanny, not by the MPI launcher),
    so that a program the script or a task starts that initialises MPI (``from mpi4py
    import MPI``, or h5py and netCDF4 built for parallel HDF5, as on Saga's module
    stack) gets a world of its own, as under plain ``python`` or in a LocalCluster.

    Inherited from the rank, the place made that MPI_Init join the job as a second
    copy of its rank: Open MPI 5 then waited in it forever (the job hung until the
    walltime), Open MPI 4.1 aborted, MPICH and Intel MPI killed the process ("PMI_Init
    failed"); a worker process restarted and died the same way until the task failed
    with KilledWorker.
    """
    for name in place_in_job(os.environ):
        os.environ.pop(name, None)


def library_name(mpi_library: str) -> str:
    """First line of ``MPI_Get_library_version``, spaces folded: "MPICH Version: 5.0.2"."""
    text = mpi_library.replace("\x00", "").strip()
    return " ".join(text.splitlines()[0].split()).rstrip(",") if text else "unknown MPI"


def diagnose_launcher(env: Mapping[str, str], mpi_library: str) -> str | None:
    """Before MPI_Init: a launcher that this MPI library certainly cannot join.

    Checked before initialising because some libraries abort inside MPI_Init with an
    internal error stack (MPICH under Open MPI's mpirun: "unsupported PMI version
    PMIx") that does not tell the user what to do.
    """
    library = library_name(mpi_library)
    is_open_mpi = mpi_library.startswith("Open MPI")
    is_mpich = not is_open_mpi and "MPICH" in mpi_library
    if "OMPI_COMM_WORLD_SIZE" in env and not is_open_mpi:
        return (
            f"Open MPI's mpirun started this process, but mpi4py uses another MPI library "
            f"({library}). Use the mpirun/mpiexec that belongs to mpi4py's MPI (the one in "
            "the same environment), or install mpi4py built for Open MPI."
        )
    if "MPI_LOCALNRANKS" in env and "PMI_SIZE" in env and is_open_mpi:
        return (
            f"MPICH's mpiexec (hydra) started this process, but mpi4py uses {library}. "
            "Use the mpirun that belongs to mpi4py's MPI (the one in the same environment)."
        )
    pmix_step = "SLURM_STEP_NUM_TASKS" in env and "PMIX_RANK" in env
    if pmix_step and is_mpich and "pmix" not in mpi_library.lower():
        return (
            f"srun started this task with the PMIx plugin, but mpi4py's MPI ({library}) "
            "was built without PMIx: use srun --mpi=pmi2 (or set SLURM_MPI_TYPE=pmi2)."
        )
    return None


def diagnose_world(env: Mapping[str, str], mpi_size: int, mpi_library: str) -> str | None:
    """After MPI_Init: a world of one that was meant to be several processes."""
    if mpi_size != 1:
        return None
    library = library_name(mpi_library)
    if _count(env, "OMPI_COMM_WORLD_SIZE") > 1:
        n = _count(env, "OMPI_COMM_WORLD_SIZE")
        return (
            f"Open MPI's mpirun started {n} processes, but mpi4py uses another MPI "
            f"library ({library}), so each process sees a world of 1 and would start its "
            "own cluster. Use the mpirun/mpiexec that belongs to mpi4py's MPI (the one in "
            "the same environment), or install mpi4py built for Open MPI."
        )
    step_tasks = _count(env, "SLURM_STEP_NUM_TASKS")
    hydra = "MPI_LOCALNRANKS" in env
    if step_tasks > 1 and not hydra:
        return (
            f"srun started {step_tasks} tasks, but mpi4py's MPI library ({library}) sees "
            "each as a world of 1: srun's MPI plugin does not match that library. Open MPI "
            "needs srun --mpi=pmix, MPICH and Intel MPI need --mpi=pmi2 (srun --mpi=list "
            "shows what this Slurm offers); or set SLURM_MPI_TYPE in the jobscript."
        )
    if _count(env, "PMI_SIZE") > 1:
        n = _count(env, "PMI_SIZE")
        return (
            f"an MPICH-style mpiexec started {n} processes, but mpi4py's MPI library "
            f"({library}) cannot join them, so each sees a world of 1. Use the mpiexec "
            "that belongs to mpi4py's MPI (the one in the same environment)."
        )
    if _count(env, "SLURM_NTASKS") > 1 and step_tasks == 0:
        n = _count(env, "SLURM_NTASKS")
        return (
            f"this Slurm job has {n} tasks but the launcher runs as one process outside "
            "srun; start it as 'srun python -m launcher ...' so every task joins the "
            "cluster (or use --plan to see what that would do)."
        )
    return None
