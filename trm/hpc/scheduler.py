"""Batched questions to the scheduler: the state of many jobs in one call, and cancelling them.

    states = job_states(profile, ["4711", "4712_3"])     # {"4711": "RUNNING", "4712_3": "COMPLETED"}
    cancel_jobs(profile, ["4711", "4712_3"])

The profile's backend answers (trm.hpc.backends: sacct/squeue, bjobs, local pids). States use
submitit's names (PENDING, RUNNING, REQUEUED, SUSPENDED, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...);
a job the scheduler no longer knows is PURGED (LSF), GONE (SLURM) or missing from the result.
Local jobs are processes: their id is the submitit controller's pid.
"""

from __future__ import annotations

from collections.abc import Iterable

from trm.hpc.backends import backend_for
from trm.hpc.profile import Profile

# A job in one of these states may still run (submitit's state names, which the LSF watcher maps to).
# The one set for every scheduler: the LSF watcher had a copy without the SLURM-only states
# (REQUEUE_HOLD, REQUEUE_FED, RESIZING, CONFIGURING), which LSF never reports, so both answered alike.
ALIVE = {
    "READY",
    "PENDING",
    "RUNNING",
    "UNKNOWN",
    "REQUEUED",
    "COMPLETING",
    "PREEMPTED",
    "SUSPENDED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "CONFIGURING",
}


class SchedulerError(RuntimeError):
    """The scheduler's command failed; the message holds its own words."""


def _ids(job_ids: Iterable[str]) -> list[str]:
    return sorted({str(j) for j in job_ids if j})


def job_states(profile: Profile | str, job_ids: Iterable[str]) -> dict[str, str]:
    """`profile`: the cluster profile, or only its scheduler's name (as a run's status.json records it)."""
    ids = _ids(job_ids)
    scheduler = profile if isinstance(profile, str) else profile.scheduler
    return backend_for(scheduler).job_states(ids) if ids else {}


def cancel_jobs(profile: Profile, job_ids: Iterable[str]) -> str:
    """Cancel jobs (array elements too) in one call; returns the scheduler's output."""
    ids = _ids(job_ids)
    return backend_for(profile.scheduler).cancel(ids) if ids else ""
