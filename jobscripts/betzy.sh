#!/bin/bash
# Dask inside one Slurm job on Betzy (whole nodes).
#
#   sbatch jobscripts/betzy.sh my_analysis.py --its --arguments
#   sbatch jobscripts/betzy.sh                # no script: a short built-in demo
#
# Betzy allocates whole nodes (128 cores, ~244 GiB usable) and rejects memory
# directives: there is no --mem here (the lesson of the tutorial's Fram example, where
# SLURMCluster's --mem made every worker job fail). The launcher divides each node's
# memory among the tasks on it instead. The lines below ask for 4 nodes (the normal
# partition's minimum) with 16 tasks of 8 cores each: 63 workers of 8 threads and
# ~15 GiB, plus one task for the scheduler and your script. The job ends with your
# script's exit status.
#
#SBATCH --account=nn9999k
#SBATCH --job-name=dask-launcher
#SBATCH --time=0-01:00:00
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=16
#SBATCH --cpus-per-task=8
# Two minutes before the time limit Slurm sends SIGUSR1 to every task: the launcher
# raises launcher.Interrupted in your script (catch it to save a checkpoint), then ends
# the whole job cleanly and writes the summary with status "interrupted".
#SBATCH --signal=USR1@120
# Short test runs: uncomment (60 min limit, up to 4 nodes).
##SBATCH --qos=devel

set -o errexit
set -o nounset

# Site software; skipped where there is no module command (e.g. a test Slurm).
# Your Python environment must be made with this Python, and mpi4py in it built
# against this MPI.
if command -v module > /dev/null 2>&1; then
    module --quiet reset
    module load Python/3.11.3-GCCcore-12.3.0
    module load OpenMPI/4.1.5-GCC-12.3.0
    module list
fi

LAUNCHER_VENV=${LAUNCHER_VENV:-$HOME/dask-env}
if [ ! -x "$LAUNCHER_VENV/bin/python" ]; then
    echo "jobscript: no Python at LAUNCHER_VENV=$LAUNCHER_VENV/bin/python; set LAUNCHER_VENV" >&2
    exit 2
fi
export PATH="$LAUNCHER_VENV/bin:$PATH"

# Dask traffic over InfiniBand.
export DASK_LAUNCHER__INTERFACE=${DASK_LAUNCHER__INTERFACE:-ib0}
# Betzy nodes have no local disk: workers spill to $TMPDIR or /tmp. To spill to the
# job's shared work area instead, uncomment:
# export DASK_LAUNCHER__LOCAL_DIRECTORY=$SCRATCH

# exec: Slurm's signals reach srun and the tasks; the job's exit code is your script's.
# --kill-on-bad-exit: a dead rank ends the job at once (a killed worker process does
# not count: its nanny restarts it).
# --cpus-per-task again: Slurm 22.05 and 23.02 do not pass sbatch's on to srun, which
# then binds every task to one core while its worker runs --cpus-per-task threads.
exec srun --kill-on-bad-exit=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \
    python -m launcher --summary "dask-summary-${SLURM_JOB_ID}.json" "$@"
