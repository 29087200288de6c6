"""The contenders that need a real Slurm, on ``tools/minislurm``.

Each measurement is one ``sbatch``; its timestamps are taken next to Slurm, inside the
controller's namespace (``minislurm exec``), by a small shell loop that submits and
then polls ``squeue`` every 50 ms, so neither ``sbatch --wait``'s 10-second polling
nor the start-up of ``minislurm exec`` is counted. Inside the job, the step jobscript
stamps the time around ``srun``, which gives the in-job figures (start-up, shutdown)
the same way the harness stamps them around ``mpirun``.

Jobs carry the benchmark token in their environment (sbatch exports it), so a process
of a job that outlives it is found and killed by PID; a job still queued at a timeout
is cancelled.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import measure
from benchmarks.workloads import script_name

REPO = Path(__file__).resolve().parent.parent
MINISLURM = REPO / "tools" / "minislurm"
SAGA = REPO / "jobscripts" / "saga.sh"
#: CPUs of the benchmark's minislurm node: in-job rows run up to this many tasks.
NODE_CPUS = 8

SUBMIT_AND_WAIT = """#!/bin/bash
# submit_and_wait.sh SBATCH_ARGS...: sbatch, then poll until the job has left the queue,
# then until the SLURMCluster worker jobs (if any) have left it too.
set -o errexit
set -o nounset
t0=$(date +%s.%N)
job=$(sbatch --parsable "$@")
job=${job%%;*}
echo "BENCH_JOB $job"
while [ -n "$(squeue -h -j "$job" -o %T 2>/dev/null)" ]; do sleep 0.05; done
t1=$(date +%s.%N)
while [ -n "$(squeue -h -n dask-worker -o %i 2>/dev/null)" ]; do sleep 0.1; done
t2=$(date +%s.%N)
echo "BENCH_SUBMIT $job $t0 $t1 $t2"
"""

#: One srun step with time stamps around it: the in-job twin of ``time mpirun``.
STEP = """#!/bin/bash
set -o errexit
set -o nounset
export PATH="$LAUNCHER_VENV/bin:$PATH"
echo "BENCH {\\"event\\": \\"step-start\\", \\"t\\": $(date +%s.%N)}"
srun "$@"
echo "BENCH {\\"event\\": \\"step-end\\", \\"t\\": $(date +%s.%N)}"
"""

#: The tutorial's jobscript for its SLURMCluster script: one task that submits workers.
SLURMCLUSTER_JOB = """#!/bin/bash
#SBATCH --job-name=dask_example
#SBATCH --ntasks=1
#SBATCH --mem-per-cpu=1GB
#SBATCH --time=0-00:10:00
set -o errexit
set -o nounset
export PATH="$LAUNCHER_VENV/bin:$PATH"
python dask_example.py
exit 0
"""


@dataclass
class JobRun:
    """One submitted job: when it was submitted and done, and what it printed."""

    job: str | None
    submitted: float | None
    done: float | None
    output: str
    run: measure.Run
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        if self.submitted is None or self.done is None:
            return None
        return self.done - self.submitted

    def markers(self) -> dict[str, dict]:
        return measure.parse_markers(self.output)


class SlurmBench:
    """Submit benchmark jobs to one minislurm and time them.

    ``workdir`` holds the workload scripts (``workloads.write_scripts``), the jobscripts
    and the jobs' output; it is every job's working directory.
    """

    def __init__(self, state_dir: str, workdir: Path, timeout: float) -> None:
        self.state_dir = state_dir
        self.workdir = workdir
        self.timeout = timeout
        (workdir / "submit_and_wait.sh").write_text(SUBMIT_AND_WAIT)
        (workdir / "step.sh").write_text(STEP)
        (workdir / "slurmcluster.sh").write_text(SLURMCLUSTER_JOB)

    def exec_cmd(self, *cmd: str) -> list[str]:
        return [str(MINISLURM), "exec", "--state-dir", self.state_dir, "--", *cmd]

    def version(self) -> str:
        done = measure.run(self.exec_cmd("sinfo", "--version"), timeout=30)
        return done.stdout.strip() or "unknown"

    def submit(self, sbatch_args: list[str], env: dict[str, str]) -> JobRun:
        """sbatch with the job's directory and output in the work dir; wait for the end."""
        full_env = {
            "LAUNCHER_VENV": sys.prefix,
            "SLURM_MPI_TYPE": "pmi2",  # MPICH from PyPI under srun
            **env,
        }
        args = [
            f"--chdir={self.workdir}",
            f"--output={self.workdir}/slurm-%j.out",
            *sbatch_args,
        ]
        cmd = self.exec_cmd("bash", str(self.workdir / "submit_and_wait.sh"), *args)
        done = measure.run(cmd, timeout=self.timeout, env=full_env)
        fields = _line(done.stdout, "BENCH_SUBMIT")
        job = fields[0] if fields else (_line(done.stdout, "BENCH_JOB") or [None])[0]
        if not fields and job:  # timed out or failed while waiting: leave nothing queued
            self.cancel(job)
        output = ""
        if job:
            path = self.workdir / f"slurm-{job}.out"
            output = path.read_text(errors="replace") if path.exists() else ""
        submitted, finished = (float(fields[1]), float(fields[2])) if fields else (None, None)
        error = None if fields and done.ok else (done.problem() + tail(output))
        return JobRun(job, submitted, finished, output, done, error)

    def cancel(self, job: str) -> None:
        measure.run(self.exec_cmd("scancel", job), timeout=30)
        measure.run(self.exec_cmd("scancel", "--name=dask-worker"), timeout=30)

    # --- the jobs ----------------------------------------------------------------

    def launcher_saga(self, workers: int) -> JobRun:
        """``sbatch jobscripts/saga.sh`` with the tutorial script: N+1 tasks of 1 CPU."""
        script = str(self.workdir / script_name("launcher", "tutorial"))
        args = [f"--ntasks={workers + 1}", "--cpus-per-task=1", "--mem-per-cpu=500M"]
        return self.submit([*args, str(SAGA), script], {"BENCH_WORKERS": str(workers)})

    def slurmcluster(self) -> JobRun:
        """The tutorial's way: a 1-task job whose script submits 5 worker jobs."""
        return self.submit([str(self.workdir / "slurmcluster.sh")], {})

    def step(self, harness: str, ranks: int, workers: int) -> JobRun:
        """One job of ``ranks`` tasks whose step runs the tutorial under srun."""
        script = str(self.workdir / script_name(harness, "tutorial"))
        if harness == "launcher":
            srun = ["python", "-m", "launcher", script]
        else:  # SLURMRunner: no MPI, roles from SLURM_PROCID
            srun = ["--mpi=none", "python", script]
        args = [f"--ntasks={ranks}", "--cpus-per-task=1", "--mem-per-cpu=500M"]
        env = {
            "BENCH_WORKERS": str(workers),
            "BENCH_SCHEDULER_FILE": str(self.workdir / "scheduler-{job_id}.json"),
        }
        return self.submit([*args, str(self.workdir / "step.sh"), *srun], env)


def _line(text: str, prefix: str) -> list[str] | None:
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return line.split()[1:]
    return None


def tail(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return f"; job output ends: {lines[-1][:160]}" if lines else ""


def cannot_run_reason() -> str | None:
    """Why minislurm cannot run here (it needs root and network namespaces), or None."""
    if os.geteuid() != 0:
        return "minislurm needs root (it starts slurmctld/slurmd and makes namespaces)"
    sys.path.insert(0, str(REPO))
    try:
        from tests.slurm import cannot_run_reason as reason
    finally:
        sys.path.remove(str(REPO))
    return reason(netns=True)
