#!/bin/bash
# Dask inside one Slurm job on Saga (per-core allocation).
#
#   sbatch jobscripts/saga.sh my_analysis.py --its --arguments
#   sbatch jobscripts/saga.sh                 # no script: a short built-in demo
#
# The job's tasks become one Dask cluster: task 0 runs the scheduler and your script
# (unmodified Dask code), every other task is a worker. Each worker gets
# --cpus-per-task threads and --mem-per-cpu x --cpus-per-task memory. The lines below
# ask for 4 workers of 4 cores and 8 GiB each, plus one task for the scheduler and your
# script. The job ends with your script's exit status.
#
# Saga requires --mem-per-cpu. Options given to sbatch override these lines, e.g.
#   sbatch --ntasks=9 --time=04:00:00 jobscripts/saga.sh my_analysis.py
#
#SBATCH --account=nn9999k
#SBATCH --job-name=dask-launcher
#SBATCH --time=0-01:00:00
#SBATCH --ntasks=5
#SBATCH --cpus-per-task=4
#SBATCH --mem-per-cpu=2G
# Two minutes before the time limit Slurm sends SIGUSR1 to every task: the launcher
# raises launcher.Interrupted in your script (catch it to save a checkpoint), then ends
# the whole job cleanly and writes the summary with status "interrupted".
#SBATCH --signal=USR1@120
# Node-local disk for worker spill files (used through $LOCALSCRATCH): uncomment.
##SBATCH --gres=localscratch:50G
# Short test runs: uncomment (2 h limit).
##SBATCH --qos=devel

# Safety settings recommended by NRIS (no pipefail trickery needed below).
set -o errexit
set -o nounset

# Site software; skipped where there is no module command (e.g. a test Slurm).
# Adapt the versions: your Python environment must be made with this Python, and
# mpi4py in it built against this MPI (pip install mpi4py after loading both).
if command -v module > /dev/null 2>&1; then
    module --quiet reset
    module load Python/3.11.3-GCCcore-12.3.0
    module load OpenMPI/4.1.5-GCC-12.3.0
    module list
fi

# The Python environment that has launcher, dask and mpi4py, e.g. made with
#   python -m venv $HOME/dask-env && $HOME/dask-env/bin/pip install <launcher>
LAUNCHER_VENV=${LAUNCHER_VENV:-$HOME/dask-env}
if [ ! -x "$LAUNCHER_VENV/bin/python" ]; then
    echo "jobscript: no Python at LAUNCHER_VENV=$LAUNCHER_VENV/bin/python; set LAUNCHER_VENV" >&2
    exit 2
fi
export PATH="$LAUNCHER_VENV/bin:$PATH"

# Dask traffic over InfiniBand (the tutorial's interface='ib0'). Every launcher
# setting can be set like this (DASK_LAUNCHER__<KEY>) or in a Dask config file.
export DASK_LAUNCHER__INTERFACE=${DASK_LAUNCHER__INTERFACE:-ib0}

# exec: srun replaces this shell, so Slurm's signals reach srun and the tasks, and the
# job's exit code is your script's. --kill-on-bad-exit: if a rank dies (the scheduler's
# node fails, a process is killed), the whole job ends at once instead of waiting;
# a killed worker process does not count, its nanny restarts it. The summary is JSON
# for the morning after.
# --cpus-per-task again: Slurm 22.05 and 23.02 do not pass sbatch's on to srun, which
# then binds every task to one core while its worker runs --cpus-per-task threads.
exec srun --kill-on-bad-exit=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \
    python -m launcher --summary "dask-summary-${SLURM_JOB_ID}.json" "$@"
