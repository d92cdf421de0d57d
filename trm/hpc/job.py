"""`TrainJob(run_dir)`: the callable submitit runs on the node, once per task (rank).

It trains the run from its frozen `config.yaml` (written at submit) with `trm.train.entry.main`.
The trainer owns the signals (trm.train.preempt) and says with its exit code what happened:

- 75 (the scheduler's warning signal, or its own time limit): checkpointed, requeue me. Rank 0
  requeues the job through the backend's job environment (SLURM: `scontrol requeue`; LSF: exit 75
  with `-Q 75`, or `brequeue`; local: submitit's restart code), after rewriting submitit's pickle
  with the remaining timeout budget. Timeouts are requeued at most `max_num_timeout` times,
  preemptions without limit (submitit's rule).
- 143 (SIGTERM/SIGINT: scancel, bkill, a cancel of the local controller): checkpointed and stopped.
  The run is `cancelled`, resumable with `tools/submit.py SPEC --resume`, unless the scheduler
  itself is requeueing the job (SLURM preemption with PreemptMode=REQUEUE sends TERM too): then it
  is a preemption. When the node cannot tell and the job starts again under the same id, the
  restart turns the cancel into a preemption (`_started`).

status.json's `message` always describes the latest transition ("preempted ...", "timed out ...",
"cancelled ...", "failed: <first line of the error> ..."); a new attempt clears it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trm.hpc.backends import node_backend, submitit_private
from trm.rundir import CONFIG, EXIT_REQUEUE, EXIT_STOPPED, SUMMARY, read_json, read_status, start_attempt, update_status

_RESUME_HINT = "resume it with tools/submit.py SPEC --resume"


class TrainJobError(RuntimeError):
    """Training ended with a failure; the message says where the log is."""


def _timed_out(elapsed_s: float, timeout_min: float, signal_delay_s: float) -> bool:
    """A stop near the time limit is a timeout, anything earlier a preemption. The scheduler warns
    `signal_delay_s` before the limit (SLURM: up to a minute earlier still), so "near" is twice
    that plus a minute. (submitit's own rule, min(80 %, limit - 10 min), calls every stop of a job
    shorter than 10 minutes a timeout.)"""
    limit_s = timeout_min * 60
    return timeout_min > 0 and elapsed_s >= limit_s - 2 * signal_delay_s - 60


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return (lines[0] if lines else "no message")[:300]


def _step(run_dir: Path) -> str:
    step = read_json(run_dir / SUMMARY).get("step")
    return f" at step {step}" if isinstance(step, int) else ""


def _restarted() -> bool:
    """The scheduler restarted this job under the same id (SLURM's requeue keeps the id)."""
    backend = node_backend()
    return backend is not None and backend.restart_count() > 0


def _stop_kind() -> str:
    """Why the trainer got a TERM, as the backend of the job this runs in tells (a cancel outside one)."""
    backend = node_backend()
    return backend.stop_kind() if backend else "cancelled"


def mark_jobs_line(run_dir: Path, code: int) -> None:
    """A run submitted from a jobs.txt: its line becomes [x] or [!] ... [exit N] now that it ended."""
    status = read_status(run_dir)
    path, command = status.get("jobs_file"), status.get("jobs_command")
    if not path or not command or not status.get("job_ids") or not Path(path).is_file():
        return
    from trm.hpc.jobs_file import mark_ended

    try:
        mark_ended(Path(path), command, f"{status.get('scheduler', '')}:{status['job_ids'][-1]}", code)
    except (OSError, ValueError, TimeoutError) as e:  # the result is in status.json; the line is a convenience
        print(f"warning: could not mark line of {path}: {e}", file=sys.stderr)


class TrainJob:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"TrainJob({str(self.run_dir)!r})"

    def argv(self) -> list[str]:
        return [
            str(self.run_dir / CONFIG),
            f"run.root={self.run_dir.parent}",
            f"run.name={self.run_dir.name}",
        ]

    def _started(self, env: Any) -> None:
        """Rank 0 at the start of an attempt. A run this very job marked cancelled after a TERM (or
        left running), and that runs again, was requeued by the scheduler: a preemption, not a cancel."""
        before = read_status(self.run_dir)
        same_job = str(env.job_id) in before.get("job_ids", [])
        preempted = (before.get("state") == "cancelled" and before.get("stopped_job") == str(env.job_id)) or (
            # killed before the trainer could say anything (TERM before its handlers), then requeued
            before.get("state") == "running" and same_job and _restarted()
        )
        start_attempt(
            self.run_dir,
            env.job_id,
            str(env.paths.stdout),
            stopped_job="",
            **({"preemptions": int(before.get("preemptions", 0)) + 1} if preempted else {}),
        )

    def _logs(self, env: Any) -> str:
        """The log files of this attempt that exist, for a message."""
        paths = [Path(env.paths.stderr), Path(env.paths.stdout), self.run_dir / "train.log"]
        found = list(dict.fromkeys(str(p) for p in paths if p.exists()))
        return f"; log: {', '.join(found)}" if found else ""

    def __call__(self) -> int:
        import submitit

        start = time.monotonic()
        env = submitit.JobEnvironment()
        rank = env.global_rank
        if rank == 0:
            self._started(env)
        from trm.train.entry import main

        errors: list[str] = []
        try:
            code = main(self.argv(), on_error=errors.append)
        except Exception as e:  # record it for tools/status.py, then let submitit report the traceback
            if rank == 0:
                message = f"failed: {first_line(f'{type(e).__name__}: {e}')}{self._logs(env)}"
                update_status(self.run_dir, state="failed", message=message, exit_code=1)
                mark_jobs_line(self.run_dir, 1)
            raise
        if code == 0:
            if rank == 0:
                update_status(self.run_dir, state="done", message="", exit_code=0)
                mark_jobs_line(self.run_dir, 0)
            return 0
        if code == EXIT_REQUEUE:
            self._requeue(env, time.monotonic() - start)
        if code == EXIT_STOPPED:
            self._stopped(env, time.monotonic() - start)
        why = first_line(errors[0]) if errors else f"training exited with code {code}"
        message = f"failed: {why}{self._logs(env)}"
        if rank == 0:
            update_status(self.run_dir, state="failed", message=message, exit_code=code)
            mark_jobs_line(self.run_dir, code)
        raise TrainJobError(message)

    def _stopped(self, env: Any, elapsed_s: float) -> None:
        """TERM/INT: the trainer checkpointed and stopped. A cancel, unless the scheduler preempted."""
        if env.global_rank != 0:
            sys.exit(EXIT_STOPPED)
        status = read_status(self.run_dir)
        if status.get("state") == "cancelled":
            update_status(self.run_dir, exit_code=EXIT_STOPPED)  # tools/submit.py --cancel said so already
            mark_jobs_line(self.run_dir, EXIT_STOPPED)
            sys.exit(EXIT_STOPPED)
        kind = _stop_kind()
        if kind in ("preempted", "timeout"):
            self._requeue(env, elapsed_s, preempted=kind == "preempted", timed_out=kind == "timeout")
        step = _step(self.run_dir)
        if kind == "requeued":
            update_status(
                self.run_dir,
                state="requeued",
                count="preemptions",
                message=f"preempted{step} (the scheduler's SIGTERM; it requeues the job); checkpointed",
            )
        else:
            update_status(
                self.run_dir,
                state="cancelled",
                exit_code=EXIT_STOPPED,
                stopped_job=str(env.job_id),
                message=f"cancelled{step} (SIGTERM: scancel, bkill or a kill); checkpoint kept, {_RESUME_HINT}",
            )
            mark_jobs_line(self.run_dir, EXIT_STOPPED)
        sys.exit(EXIT_STOPPED)

    def _requeue(self, env: Any, elapsed_s: float, preempted: bool = False, timed_out: bool = False) -> None:
        from submitit.core.utils import DelayedSubmission

        if env.global_rank != 0:
            sys.exit(EXIT_REQUEUE)  # rank 0 requeues the whole job
        status = read_status(self.run_dir)
        if status.get("state") == "cancelled":
            sys.exit(EXIT_REQUEUE)  # stopped by tools/submit.py --cancel: checkpointed, stays cancelled
        paths = env.paths
        delayed = DelayedSubmission.load(paths.submitted_pickle)
        timeout_min, timeouts_left = submitit_private.timeout_budget(delayed)
        delay_s = float(os.environ.get("TRM_SIGNAL_DELAY_S", "120"))  # exported by the job script
        timed_out = timed_out or (not preempted and _timed_out(elapsed_s, timeout_min, delay_s))
        countdown = timeouts_left - int(timed_out)
        step = _step(self.run_dir)
        if countdown < 0:
            num = int(status.get("timeouts", 0)) + 1
            message = (
                f"timed out{step}: {num} time-out(s), more than the profile's max_num_timeout "
                f"({num - 1}) allows; not requeued, checkpoint kept, {_RESUME_HINT}"
            )
            update_status(self.run_dir, state="failed", message=message, count="timeouts", exit_code=EXIT_REQUEUE)
            mark_jobs_line(self.run_dir, EXIT_REQUEUE)
            raise TrainJobError(message)
        nxt = DelayedSubmission(TrainJob(self.run_dir))
        nxt.set_timeout(timeout_min, countdown)
        tmp = paths.submitted_pickle.with_name(paths.submitted_pickle.name + ".tmp")
        nxt.dump(tmp)
        os.replace(tmp, paths.submitted_pickle)
        if timed_out:
            num = int(status.get("timeouts", 0)) + 1
            message = f"timed out{step} ({num} time-out(s), {countdown} more allowed); checkpointed, requeued"
        else:
            how = "the scheduler's SIGTERM" if preempted else "the scheduler's warning signal"
            message = f"preempted{step} ({how}); checkpointed, requeued"
        update_status(
            self.run_dir,
            state="requeued",
            count="timeouts" if timed_out else "preemptions",
            message=message,
        )
        try:
            submitit_private.requeue(env, countdown)
        except subprocess.CalledProcessError as e:
            if e.returncode >= 0:  # the scheduler refused (e.g. scontrol on a job that is ending)
                self._requeue_failed(message, e)
            # Killed by a signal: the scheduler took the requeue and is ending this job's processes,
            # the requeue command with them (brequeue/scontrol run inside the job they requeue).
        except (OSError, subprocess.SubprocessError) as e:
            self._requeue_failed(message, e)
        sys.exit(EXIT_REQUEUE)

    def _requeue_failed(self, message: str, e: Exception) -> None:
        message = f"{message.split(';')[0]}; checkpointed, but the requeue failed ({e}); {_RESUME_HINT}"
        update_status(self.run_dir, state="failed", message=message)
        raise TrainJobError(message) from None

    def checkpoint(self, *args: object, **kwargs: object):  # noqa: ANN201 (submitit's hook)
        """submitit calls this when its own handler gets the signal (before the trainer installed
        its handlers): requeue the same run; `resume=auto` starts from the newest checkpoint."""
        from submitit.core.utils import DelayedSubmission

        update_status(
            self.run_dir,
            state="requeued",
            count="preemptions",
            message="preempted before training started; requeued",
        )
        return DelayedSubmission(TrainJob(self.run_dir))
