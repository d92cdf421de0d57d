"""`ShellJob`: a jobs.txt line that is not a training, run as a plain job on the node.

    job = executor.submit(ShellJob(run_dir, "python tools/build_data.py maze; echo built", cwd=repo))

The command runs once (rank 0; other tasks return at once) with bash in `cwd`, its output in the
job's log. Its run directory holds only status.json (state, job ids, exit code, log), so
tools/status.py shows it like any run. A TERM (scancel, bkill) reaches the command as well; the job
ends `cancelled`. There is no checkpoint and no requeue: a plain command is not resumable.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from trm.hpc.job import TrainJobError, first_line, mark_jobs_line
from trm.rundir import start_attempt, update_status


class ShellJob:
    def __init__(self, run_dir: str | Path, command: str, cwd: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.command = command
        self.cwd = Path(cwd)

    def __repr__(self) -> str:
        return f"ShellJob({str(self.run_dir)!r}, {self.command!r})"

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        if env.global_rank != 0:
            return 0
        log = str(env.paths.stdout)
        start_attempt(self.run_dir, env.job_id, log)
        child = subprocess.Popen(["bash", "-c", self.command], cwd=self.cwd)
        stopped: list[int] = []

        def forward(signum: int, frame: object) -> None:  # noqa: ARG001
            stopped.append(signum)
            child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if code == 0:
            update_status(self.run_dir, state="done", exit_code=0)
        elif stopped:
            name = signal.Signals(stopped[0]).name
            update_status(
                self.run_dir,
                state="cancelled",
                exit_code=code,
                message=f"cancelled ({name}: scancel, bkill or a kill); a plain command is not resumable",
            )
        else:
            update_status(
                self.run_dir,
                state="failed",
                exit_code=code,
                message=f"failed: command exited with code {code}; log: {log}",
            )
        mark_jobs_line(self.run_dir, code)
        if code != 0:
            raise TrainJobError(first_line(f"command exited with code {code}: {self.command}"))
        return 0
