"""The jobs.txt runner: claim the next pending line, run it, mark it done or failed (tools/queue.py).

    runner = QueueRunner(Path("jobs.txt"), gpu=0)
    runner.run()            # until no pending line is left

Several runners (one per GPU) share one file: a runner claims a line under the file's lock by
rewriting `[ ]` to `[-] ... [host:pid]`, so every line runs exactly once. A line whose runner died
(same host, pid gone) is reclaimed: set back to pending and run again; with `train.resume=auto`
the training continues from its checkpoint. A command that exits 75 (the trainer checkpointed on a
signal) goes back to pending as well, and so does one that exits 143 (checkpointed on TERM) because
this runner was stopped. The child gets SIGTERM when its runner dies (Linux), so a killed runner does
not leave an orphaned training behind that a reclaim would duplicate. The file's writers hold
`jobs.txt.lock` (an empty file next to it, kept between runs: removing it while a runner works
would let two writers in).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from trm.data.format import atomic_write_text
from trm.hpc.jobs_file import JobLine, lock_for, parse_jobs_text, replace_line, rewrite, with_state

EXIT_REQUEUE = 75  # trm.train.preempt: checkpointed, requeue me
EXIT_STOPPED = 143  # trm.train.preempt: checkpointed and stopped on TERM/INT
_PR_SET_PDEATHSIG = 1


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the runner dies (Linux only; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


class QueueRunner:
    def __init__(self, path: Path, gpu: str | None = None, say: Callable[[str], None] = print) -> None:
        self.path = Path(path).resolve()
        self.gpu = gpu
        self.say = say
        self.owner = f"{socket.gethostname().split('.')[0]}:{os.getpid()}"
        self.child: subprocess.Popen | None = None

    def _reclaim(self, text: str, jobs: list[JobLine]) -> str:
        host = self.owner.split(":")[0]
        for job in jobs:
            if job.state != "running" or not job.owner:
                continue
            owner_host, _, pid = job.owner.rpartition(":")
            if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                self.say(f"reclaiming line {job.lineno} from dead runner {job.owner}")
                text = replace_line(text, with_state(job, "pending"))
        return text

    def claim(self) -> JobLine | None:
        """The next pending line, marked as ours; None when nothing is pending."""
        with lock_for(self.path):
            text = self.path.read_text()
            text = self._reclaim(text, parse_jobs_text(text, str(self.path)))
            jobs = parse_jobs_text(text, str(self.path))
            job = next((j for j in jobs if j.state == "pending"), None)
            if job is not None:
                job = with_state(job, "running", owner=self.owner)
                text = replace_line(text, job)
            if text != self.path.read_text():
                atomic_write_text(self.path, text)
            return job

    def finish(self, job: JobLine, code: int) -> None:
        # 75: the training checkpointed and asks to go on. 143 (stopped on TERM/INT, checkpointed):
        # when this runner is being stopped the line goes back too; a line killed on its own failed.
        back = code == EXIT_REQUEUE or (code == EXIT_STOPPED and getattr(self, "stopping", False))
        state = "done" if code == 0 else "pending" if back else "failed"

        def edit(text: str) -> str:
            for now in parse_jobs_text(text, str(self.path)):
                # The file may have been edited meanwhile: find our line by command and owner.
                if now.state == "running" and now.owner == self.owner and now.command == job.command:
                    return replace_line(
                        text, with_state(now, state, exit_code=code if state == "failed" else None)
                    )
            self.say(f"line {job.lineno} was changed while it ran; its result ({state}) is not recorded")
            return text

        rewrite(self.path, edit)

    def run_one(self, job: JobLine) -> int:
        env = dict(os.environ)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        self.say(f"[{self.owner}] line {job.lineno}: {job.command}")
        start = time.monotonic()
        self.child = subprocess.Popen(
            ["bash", "-c", job.command], cwd=self.path.parent, env=env, preexec_fn=_die_with_parent
        )
        try:
            code = self.child.wait()
        finally:
            self.child = None
        self.say(f"[{self.owner}] line {job.lineno}: exit {code} after {time.monotonic() - start:.0f} s")
        return code

    def _forward(self, signum: int, frame: object) -> None:  # noqa: ARG002
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(
                signum
            )  # the trainer checkpoints and exits 75: the line goes back to pending
        self.stopping = True

    def run(self, once: bool = False) -> int:
        """Run lines until none is pending (or one, with `once`); returns the number of failed lines."""
        self.stopping = False
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(sig, self._forward)
        failed = 0
        while not self.stopping:
            job = self.claim()
            if job is None:
                break
            code = self.run_one(job)
            self.finish(job, code)
            failed += code not in (0, EXIT_REQUEUE) and not (code == EXIT_STOPPED and self.stopping)
            if once:
                break
        return failed


def cli(doc: str, argv: list[str] | None = None) -> int:
    """tools/queue.py's command line (kept here: that script must stay importable as `queue`)."""
    from trm.hpc.jobs_file import JobsFileError

    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("jobs", help="the jobs file, e.g. jobs.txt")
    p.add_argument("--gpu", help="CUDA_VISIBLE_DEVICES for the commands of this runner (e.g. 0, or 0,1)")
    p.add_argument("--once", action="store_true", help="run one pending line, then stop")
    args = p.parse_args(argv)
    path = Path(args.jobs)
    if not path.is_file():
        print(f"error: jobs file '{path}' does not exist", file=sys.stderr)
        return 2
    try:
        failed = QueueRunner(path, gpu=args.gpu).run(once=args.once)
    except JobsFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if failed else 0
