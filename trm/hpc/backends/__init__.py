"""Scheduler backends: one class per scheduler (SLURM, LSF, local), registered in `BACKENDS`.

    backend = backend_for(profile.scheduler)
    executor = make_executor(profile, folder, resources, repo_root, job_name)   # = backend.executor(...)

The table names the module and class of each backend (as submitit's plugin entry points do): a
module is imported the first time its backend is asked for, so that this package can be imported by
the modules the backends themselves build on (profile, spec, render) without a cycle, and loading a
spec does not import submitit. Adding a scheduler: a `Backend` subclass (trm/hpc/backends/base.py)
in a new module, one line here, one template in templates/ (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trm.hpc.backends.base import Backend
    from trm.hpc.profile import Profile
    from trm.hpc.spec import Resources

BACKENDS: dict[str, str] = {
    "slurm": "trm.hpc.backends.slurm:SlurmBackend",
    "lsf": "trm.hpc.backends.lsf:LsfBackend",
    "local": "trm.hpc.backends.local:LocalBackend",
}


class UnknownSchedulerError(ValueError):
    """A scheduler name no backend is registered for."""


@cache
def backend_for(scheduler: str) -> Backend:
    """The backend registered as `scheduler` (a profile's `scheduler:`, a run's status.json)."""
    if scheduler not in BACKENDS:
        raise UnknownSchedulerError(f"unknown scheduler {scheduler!r}; the backends are: {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[scheduler].partition(":")
    return getattr(importlib.import_module(module), cls)()


def node_backend() -> Backend | None:
    """On a node: the backend of the job this process runs in (the job script exports
    SUBMITIT_EXECUTOR), or None outside one (submitit's debug executor, a plain process)."""
    name = os.environ.get("SUBMITIT_EXECUTOR", "")
    return backend_for(name) if name in BACKENDS else None


def make_executor(
    profile: Profile,
    folder: Path,
    resources: Resources,
    repo_root: Path,
    job_name: str,
    python: str | None = None,
) -> Any:
    """A submitit executor for `profile.scheduler` whose scripts come from templates/."""
    return backend_for(profile.scheduler).executor(profile, folder, resources, repo_root, job_name, python)
