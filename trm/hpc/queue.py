"""The jobs.txt runner: claim the next pending line, run it, mark it done or failed (tools/run_queue.py).

    runner = QueueRunner(Path("jobs.txt"), gpu=0)
    runner.run()            # until no pending line is left

Several runners (one per GPU) share one file: a runner claims a line under the file's lock by
rewriting `[ ]` to `[-] ... [host:pid]`, so every line runs exactly once. The line runs in its own
session (process group), whose id is recorded in the line (`[host:pid/pgid]`), under a small bash
wrapper that writes the command's exit status to `.<jobs file>.lines/<host>-<pgid>.exit` when it
ends. So a runner killed mid-line (even `kill -9`) does not lose the line nor run it twice: its
processes go on; the next runner that looks at the file leaves the line alone while any process of
that group (or any process carrying the line's tag in its environment) is alive, then records the
exit status the wrapper left; only a line whose processes all died without one is set back to
pending and run again (with `train.resume=auto` the training continues from its checkpoint). A
command that exits 75 (the trainer checkpointed on a signal) goes back to pending as well, and so
does one that exits 143 (checkpointed on TERM) because this runner was being stopped. Writers of the
file hold `jobs.txt.lock` beside it (an empty file that stays: removing it while a runner works
would let two writers in).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from trm.hpc.jobs_file import (
    JobLine,
    lock_for,
    parse_jobs_text,
    read_jobs_text,
    replace_line,
    rewrite,
    with_state,
    write_keeping_mode,
)

EXIT_REQUEUE = 75  # trm.train.preempt: checkpointed, requeue me
EXIT_STOPPED = 143  # trm.train.preempt: checkpointed and stopped on TERM/INT
# Waits for "go" on stdin (sent once the runner has recorded the group in the line; a runner that dies
# first closes the pipe and nothing runs), then runs the line in this shell (so `exit 3` and compound
# commands work) and, whatever happens, leaves the exit status in $__trm_res. Signals get a handler
# (not "ignore", which children would inherit), so the wrapper outlives a TERM sent to the group and
# still records the command's status.
_WRAPPER = r"""__trm_cmd=$1 __trm_res="$2/$3-$$.exit"
set --
IFS= read -r __trm_go && [ "$__trm_go" = go ] || exit 99
exec </dev/null
trap 'printf "%s\n" "$?" > "$__trm_res.tmp" && mv -f "$__trm_res.tmp" "$__trm_res"' EXIT
trap ':' TERM INT USR2 HUP
eval "$__trm_cmd"
"""


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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tagged_processes(tag: str) -> list[int]:
    """Pids of this host's processes whose environment carries TRM_QUEUE_LINE=`tag` (Linux; [] elsewhere)."""
    needle = f"TRM_QUEUE_LINE={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc/self/environ").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and _pid_alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class QueueRunner:
    def __init__(self, path: Path, gpu: str | None = None, say: Callable[[str], None] = print) -> None:
        self.path = Path(path).resolve()
        self.gpu = gpu
        self.say = say
        self.host = socket.gethostname().split(".")[0]
        self.owner = f"{self.host}:{os.getpid()}"
        self.child: subprocess.Popen | None = None
        self.last_pgid: int | None = None  # of the line run last; its exit-status file goes once recorded
        self.results = self.path.parent / f".{self.path.name}.lines"  # exit status of each started line

    def _result_file(self, pgid: int) -> Path:
        return self.results / f"{self.host}-{pgid}.exit"

    def _reclaim(self, text: str, jobs: list[JobLine]) -> str:
        for job in jobs:
            if job.state != "running" or not job.owner:
                continue
            owner_host, _, ids = job.owner.rpartition(":")
            pid, _, pgid = ids.partition("/")
            if owner_host != self.host or not pid.isdigit() or _pid_alive(int(pid)):
                continue  # another machine's line, or its runner is alive: not ours to judge
            runner = f"{owner_host}:{pid}"
            if (pgid and _group_alive(int(pgid))) or _tagged_processes(f"{self.path}|{runner}|{job.lineno}"):
                continue  # the runner died but the line's processes go on: it is still running
            code = self._read_result(int(pgid)) if pgid else None
            if code is None:
                self.say(
                    f"reclaiming line {job.lineno} from dead runner {job.owner} (its processes are gone, "
                    f"no exit status recorded)"
                )
                text = replace_line(text, with_state(job, "pending"))
            else:
                self.say(f"line {job.lineno}: its runner {runner} died, the line ended with exit {code}")
                text = replace_line(text, self._finished(job, code))
        return text

    def _read_result(self, pgid: int) -> int | None:
        f = self._result_file(pgid)
        try:
            code = int(f.read_text().strip())
        except (OSError, ValueError):
            return None
        f.unlink(missing_ok=True)
        return code

    @staticmethod
    def _finished(job: JobLine, code: int) -> JobLine:
        state = "done" if code == 0 else "pending" if code == EXIT_REQUEUE else "failed"
        return with_state(job, state, exit_code=code if state == "failed" else None)

    def claim(self) -> JobLine | None:
        """The next pending line, marked as ours; None when nothing is pending."""
        with lock_for(self.path):
            original = read_jobs_text(self.path)
            text = self._reclaim(original, parse_jobs_text(original, str(self.path)))
            jobs = parse_jobs_text(text, str(self.path))
            job = next((j for j in jobs if j.state == "pending"), None)
            if job is not None:
                job = with_state(job, "running", owner=self.owner)
                text = replace_line(text, job)
            if text != original:
                write_keeping_mode(self.path, text)
            return job

    def _record_group(self, job: JobLine, pgid: int) -> JobLine:
        """Add the line's process group to its owner, so a later runner can tell whether it still runs."""
        recorded = with_state(job, "running", owner=f"{self.owner}/{pgid}")

        def edit(text: str) -> str:
            for now in parse_jobs_text(text, str(self.path)):
                if now.state == "running" and now.owner == self.owner and now.command == job.command:
                    return replace_line(text, replace(recorded, lineno=now.lineno))
            return text

        rewrite(self.path, edit)
        return recorded

    def finish(self, job: JobLine, code: int) -> None:
        def edit(text: str) -> str:
            for now in parse_jobs_text(text, str(self.path)):
                # The file may have been edited meanwhile: find our line by command and owner.
                if now.state == "running" and now.owner.split("/")[0] == self.owner and now.command == job.command:
                    ended = self._finished(now, code)
                    if code == EXIT_STOPPED and getattr(self, "stopping", False):
                        ended = with_state(now, "pending")  # stopped with its runner: run it again later
                    return replace_line(text, ended)
            self.say(f"line {job.lineno} was changed while it ran; its result (exit {code}) is not recorded")
            return text

        rewrite(self.path, edit)
        # Only now: a runner killed before the line was marked leaves the status for the next one to record.
        if self.last_pgid is not None:
            self._result_file(self.last_pgid).unlink(missing_ok=True)

    def run_one(self, job: JobLine) -> int:
        env = dict(os.environ)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        # Every process of the line inherits this tag: a later runner finds them even if they left the group.
        env["TRM_QUEUE_LINE"] = f"{self.path}|{self.owner}|{job.lineno}"
        self.say(f"[{self.owner}] line {job.lineno}: {job.command}")
        start = time.monotonic()
        self.results.mkdir(exist_ok=True)
        self.child = subprocess.Popen(
            ["bash", "-c", _WRAPPER, "trm-queue-line", job.command, str(self.results), self.host],
            cwd=self.path.parent,
            env=env,
            start_new_session=True,
            stdin=subprocess.PIPE,
        )
        pgid = self.last_pgid = self.child.pid  # a new session: its leader's pid ($$ in the wrapper) is the group id
        try:
            self._record_group(job, pgid)
            try:
                self.child.stdin.write(b"go\n")  # type: ignore[union-attr]
                self.child.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass  # the wrapper is already gone (killed): its exit code says so
            code = self.child.wait()
        finally:
            self.child = None
        self.say(f"[{self.owner}] line {job.lineno}: exit {code} after {time.monotonic() - start:.0f} s")
        return code

    def _forward(self, signum: int, frame: object) -> None:  # noqa: ARG002
        if self.child is not None and self.child.poll() is None:
            try:  # the whole line: the trainer checkpoints and exits 75, and the line goes back to pending
                os.killpg(self.child.pid, signum)
            except ProcessLookupError:
                pass
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
    """tools/run_queue.py's command line."""
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
