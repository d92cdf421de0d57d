"""Scheduler backends: SLURM (submitit), LSF (our submitit plugin) and the local machine.

    executor = make_executor(profile, folder, resources, repo_root, job_name)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trm.hpc.profile import Profile
from trm.hpc.spec import Resources


def make_executor(profile: Profile, folder: Path, resources: Resources, repo_root: Path, job_name: str,
                  python: str | None = None) -> Any:
    """A submitit executor for `profile.scheduler` whose scripts come from templates/."""
    if profile.scheduler == "slurm":
        from trm.hpc.backends import slurm as backend
    elif profile.scheduler == "lsf":
        from trm.hpc.backends import lsf as backend  # type: ignore[no-redef]
    else:
        from trm.hpc.backends import local as backend  # type: ignore[no-redef]
    return backend.executor_for(folder, profile, resources, repo_root, job_name, python)
