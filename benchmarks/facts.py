"""Facts about the machine and the software, taken when the measurements start.

They are stored with the raw results, so a report rendered later (``--render-only``)
names the launcher that was measured, not the one in the tree at rendering time.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, str]:
    cpu = "unknown"
    memory = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": memory,
        "OS": f"{platform.system()} {platform.release()}",
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _mpi_library() -> str:
    code = (
        "import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; "
        "print(MPI.Get_library_version().splitlines()[0])"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "unknown (timed out)"
    return done.stdout.strip() or "unknown"


def _launcher_state() -> str:
    """The launcher's version and git state: it changes under the benchmark's feet."""
    import launcher

    text = f"{launcher.__version__}"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "launcher"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return text
    if head:
        text += f", git {head}"
    if dirty:
        text += f" with uncommitted changes in {len(dirty.splitlines())} file(s) of launcher/"
    return text


def versions(slurm_version: str | None) -> dict[str, str]:
    return {
        "Python": platform.python_version(),
        "dask": _version("dask"),
        "distributed": _version("distributed"),
        "dask-mpi": _version("dask-mpi"),
        "mpi4py": _version("mpi4py"),
        "MPI library": _mpi_library(),
        "Slurm": f"{slurm_version} (tools/minislurm)" if slurm_version else "not used",
        "dask-jobqueue": _version("dask-jobqueue"),
        "launcher": _launcher_state(),
    }
