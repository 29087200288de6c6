"""Run a Dask cluster and an unmodified Dask script inside one MPI/Slurm job.

``srun python -m launcher my_analysis.py`` (or ``mpirun -n 4 python -m launcher``):
the ranks of the job become the Dask scheduler, client and workers, the script runs as
``__main__`` on the client rank, and the job ends with the script's exit status.
"""

from launcher.interrupt import ClusterLost, Interrupted

__version__ = "0.1.0"
__all__ = ["ClusterLost", "Interrupted", "__version__"]
