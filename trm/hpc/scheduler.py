"""Batched questions to the scheduler: the state of many jobs in one call, and cancelling them.

    states = job_states(profile, ["4711", "4712_3"])     # {"4711": "RUNNING", "4712_3": "COMPLETED"}
    cancel_jobs(profile, ["4711", "4712_3"])

States use submitit's names (PENDING, RUNNING, REQUEUED, SUSPENDED, COMPLETED, FAILED, CANCELLED,
TIMEOUT, ...); a job the scheduler no longer knows is PURGED (LSF) or missing from the result.
Local jobs are processes: their id is the submitit controller's pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable

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


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SchedulerError(f"'{cmd[0]}' not found: is this a login node of the cluster the profile names?") from None


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """sacct for all, squeue for what sacct does not list (a just-submitted job; an array element
    cancelled while pending, which Slurm 22.05's sacct drops); neither knows it: GONE."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    parents = sorted({j.split("_")[0] for j in job_ids})
    proc = _run(["sacct", "-X", "-o", "JobID,State", "--parsable2", *(f"-j{p}" for p in parents)])
    if proc.returncode != 0:
        raise SchedulerError(f"sacct failed: {proc.stderr.strip()}")
    info = SlurmInfoWatcher().read_info(proc.stdout)
    out = {j: info[j]["State"].split()[0] for j in job_ids if j in info}  # "CANCELLED by 0" -> CANCELLED
    missing = [j for j in job_ids if j not in out]
    if missing:
        queue = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted({j.split("_")[0] for j in missing}))])
        listed = dict(line.split("|", 1) for line in queue.stdout.split() if "|" in line)
        out.update({j: listed.get(j, "GONE") for j in missing})
    return out


def _lsf_states(job_ids: list[str]) -> dict[str, str]:
    from trm.hpc.backends.lsf import _NOT_FOUND, BJOBS_FORMAT, LsfInfoWatcher

    parents = sorted({j.split("_")[0] for j in job_ids})
    proc = _run(["bjobs", "-o", BJOBS_FORMAT, "-noheader", *parents])
    info = LsfInfoWatcher().read_info(proc.stdout)
    gone = {m[1] for m in _NOT_FOUND.finditer(proc.stderr + proc.stdout)}
    out = {j: info[j]["State"] for j in job_ids if j in info}
    out.update({j: "PURGED" for j in job_ids if j not in out and j.split("_")[0] in gone})
    return out


def _local_states(job_ids: list[str]) -> dict[str, str]:
    out = {}
    for j in job_ids:
        try:
            with open(f"/proc/{int(j)}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            out[j] = "COMPLETED" if zombie else "RUNNING"
        except (OSError, ValueError, IndexError):
            out[j] = "COMPLETED"  # the controller is gone: the job ended (its result or status says how)
    return out


def job_states(profile: Profile, job_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    if profile.scheduler == "slurm":
        return _slurm_states(ids)
    if profile.scheduler == "lsf":
        return _lsf_states(ids)
    return _local_states(ids)


def cancel_jobs(profile: Profile, job_ids: Iterable[str]) -> str:
    """Cancel jobs (array elements too) in one call; returns the scheduler's output."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return ""
    if profile.scheduler == "slurm":
        proc = _run(["scancel", *ids])
    elif profile.scheduler == "lsf":
        from trm.hpc.backends.lsf import lsf_job_ref

        proc = _run(["bkill", *(lsf_job_ref(j) for j in ids)])
    else:
        for j in ids:
            try:
                # submitit's local controller forwards TERM to its tasks (a cancel: the trainer
                # checkpoints and stops) and then ends; INT would kill them a second later.
                os.kill(int(j), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        return ""
    if proc.returncode != 0 and profile.scheduler == "slurm":
        raise SchedulerError(f"scancel failed: {proc.stderr.strip()}")
    return (proc.stdout + proc.stderr).strip()
