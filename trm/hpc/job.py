"""`TrainJob(run_dir)`: the callable submitit runs on the node, once per task (rank).

It trains the run from its frozen `config.yaml` (written at submit) with `trm.train.entry.main`.
The trainer owns the warning signal: it checkpoints at the next step boundary and returns
EXIT_REQUEUE (75). Rank 0 then requeues the job through the backend's job environment (SLURM:
`scontrol requeue`; LSF: exit 75 with `-Q 75`, or `brequeue`; local: submitit's restart code), after
rewriting submitit's pickle with the remaining timeout budget. The next attempt starts the same
callable, and `train.resume=auto` continues from the newest complete checkpoint. Timeouts are
requeued at most `max_num_timeout` times; preemptions without limit (submitit's rule).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from trm.hpc.runstate import update_status

EXIT_REQUEUE = 75  # trm.train.preempt.EXIT_REQUEUE


class TrainJobError(RuntimeError):
    """Training ended with a failure; the message says where the log is."""


def _timed_out(elapsed_s: float, timeout_min: float) -> bool:
    """submitit's rule: past min(80 %, limit - 10 min) of the time limit counts as a timeout."""
    limit_s = timeout_min * 60
    return timeout_min > 0 and elapsed_s >= min(0.8 * limit_s, limit_s - 600)


class TrainJob:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def __repr__(self) -> str:
        return f"TrainJob({str(self.run_dir)!r})"

    def argv(self) -> list[str]:
        return [str(self.run_dir / "config.yaml"), f"run.root={self.run_dir.parent}", f"run.name={self.run_dir.name}"]

    def __call__(self) -> int:
        import submitit

        start = time.monotonic()
        env = submitit.JobEnvironment()
        rank = env.global_rank
        if rank == 0:
            update_status(self.run_dir, state="running", count="attempts", add_job_id=env.job_id,
                          host=socket.gethostname(), message="", add_log_path=str(env.paths.stdout))
        from trm.train.entry import main

        code = main(self.argv())
        if code == 0:
            if rank == 0:
                update_status(self.run_dir, state="done")
            return 0
        if code == EXIT_REQUEUE:
            self._requeue(env, time.monotonic() - start)
        message = f"training exited with code {code}; see {env.paths.stderr} and {self.run_dir / 'train.log'}"
        if rank == 0:
            update_status(self.run_dir, state="failed", message=message, exit_code=code)
        raise TrainJobError(message)

    def _requeue(self, env, elapsed_s: float) -> None:  # noqa: ANN001 (a submitit JobEnvironment)
        from submitit.core.utils import DelayedSubmission

        if env.global_rank != 0:
            sys.exit(EXIT_REQUEUE)  # rank 0 requeues the whole job
        paths = env.paths
        delayed = DelayedSubmission.load(paths.submitted_pickle)
        timed_out = _timed_out(elapsed_s, delayed._timeout_min)
        countdown = delayed._timeout_countdown - int(timed_out)
        if countdown < 0:
            message = (f"timed out {delayed._timeout_countdown + 1} times (max_num_timeout of the profile); "
                       f"not requeued. Resume it with tools/submit.py SPEC --resume")
            update_status(self.run_dir, state="failed", message=message, count="timeouts")
            raise TrainJobError(message)
        nxt = DelayedSubmission(TrainJob(self.run_dir))
        nxt.set_timeout(delayed._timeout_min, countdown)
        tmp = paths.submitted_pickle.with_name(paths.submitted_pickle.name + ".tmp")
        nxt.dump(tmp)
        os.replace(tmp, paths.submitted_pickle)
        update_status(self.run_dir, state="requeued", count="timeouts" if timed_out else "preemptions",
                      message=f"checkpointed ({'time limit' if timed_out else 'preempted'}), requeued")
        env._requeue(countdown)
        sys.exit(EXIT_REQUEUE)

    def checkpoint(self, *args: object, **kwargs: object):  # noqa: ANN201 (submitit's hook)
        """submitit calls this when its own handler gets the signal (before the trainer installed
        its handlers): requeue the same run; `resume=auto` starts from the newest checkpoint."""
        from submitit.core.utils import DelayedSubmission

        update_status(self.run_dir, state="requeued", count="preemptions", message="signal before training started")
        return DelayedSubmission(TrainJob(self.run_dir))
