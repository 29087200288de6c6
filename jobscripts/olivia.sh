#!/bin/bash
# Dask inside one Slurm job on Olivia (the small partition: per core, one node).
#
#   sbatch jobscripts/olivia.sh my_analysis.py --its --arguments
#   sbatch jobscripts/olivia.sh               # no script: a short built-in demo
#
# Task 0 runs the scheduler and your script, every other task is a worker with
# --cpus-per-task threads and --mem-per-cpu x --cpus-per-task memory: below, 7 workers
# of 8 cores and 16 GiB. The job ends with your script's exit status.
#
# For the large partition (whole nodes of 256 cores, no memory directive), replace
# the sizing lines with e.g.
#   #SBATCH --partition=large
#   #SBATCH --nodes=2
#   #SBATCH --ntasks-per-node=32
#   #SBATCH --cpus-per-task=8
# and drop --mem-per-cpu: the launcher then divides each node's memory among its tasks.
#
# For the accel partition (GH200 nodes, 4 GPUs each), ask for the node's GPUs and one
# task per GPU plus task 0 (the scheduler and your script), e.g.
#   #SBATCH --partition=accel
#   #SBATCH --gpus-per-node=4
#   #SBATCH --ntasks-per-node=5
# with the partition's own rules for cores and memory, and the module set for the GPU
# nodes instead of NRIS/CPU: each worker then gets one GPU of its node
# (CUDA_VISIBLE_DEVICES), where Slurm lets every task see all four, and the Dask
# resource GPU=1 that tasks submitted with resources={"GPU": 1} ask for.
#
#SBATCH --account=nn9999k
#SBATCH --job-name=dask-launcher
#SBATCH --time=0-01:00:00
#SBATCH --partition=small
#SBATCH --ntasks=8
#SBATCH --cpus-per-task=8
#SBATCH --mem-per-cpu=2G
# Two minutes before the time limit Slurm sends SIGUSR1 to every task: the launcher
# raises launcher.Interrupted in your script (catch it to save a checkpoint), then ends
# the whole job cleanly and writes the summary with status "interrupted".
#SBATCH --signal=USR1@120
##SBATCH --qos=devel

# (Olivia's own sample has "set -errext -nounset -o pipefail", which is not valid bash.)
set -o errexit
set -o nounset

if command -v module > /dev/null 2>&1; then
    module --quiet reset
    module load NRIS/CPU
    module list
fi

# Olivia forbids plain pip/conda installs on the system: make the environment with
# hpc-container-wrapper (e.g. pip-containerize new --prefix $HOME/dask-env req.txt)
# and point LAUNCHER_VENV at its install prefix; its bin/python runs inside the
# container, so the line below is the same for a venv and a wrapped environment.
LAUNCHER_VENV=${LAUNCHER_VENV:-$HOME/dask-env}
if [ ! -x "$LAUNCHER_VENV/bin/python" ]; then
    echo "jobscript: no Python at LAUNCHER_VENV=$LAUNCHER_VENV/bin/python; set LAUNCHER_VENV" >&2
    exit 2
fi
export PATH="$LAUNCHER_VENV/bin:$PATH"

# Open MPI on Olivia: on one node use shared memory...
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
export OMPI_MCA_btl=${OMPI_MCA_btl:-sm,self}
# ...across nodes (the large partition) use the Slingshot fabric instead:
# export OMPI_MCA_pml=cm OMPI_MCA_mtl=ofi

# Olivia's network is Slingshot (hsn0, ...): there is no ib0, so the interface is left
# to Dask. $SCRATCH is node-local on CPU nodes: use it for worker spill files.
if [ -n "${SCRATCH:-}" ]; then
    export DASK_LAUNCHER__LOCAL_DIRECTORY=${DASK_LAUNCHER__LOCAL_DIRECTORY:-$SCRATCH}
fi

# exec: Slurm's signals reach srun and the tasks; the job's exit code is your script's.
# --kill-on-bad-exit: a dead rank ends the job at once (a killed worker process does
# not count: its nanny restarts it).
# --cpus-per-task again: Slurm 22.05 and 23.02 do not pass sbatch's on to srun, which
# then binds every task to one core while its worker runs --cpus-per-task threads.
exec srun --kill-on-bad-exit=1 ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \
    python -m launcher --summary "dask-summary-${SLURM_JOB_ID}.json" "$@"
