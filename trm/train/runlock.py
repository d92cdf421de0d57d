"""One trainer per run directory, and a heartbeat that tells a live run from a dead one.

    lock = acquire_run_lock(run_dir, env)   # rank 0 holds it; every rank learns whether it was taken
    ...
    lock.release()

The lock is a `filelock.SoftFileLease` on `<run>/.trainer.lock`: a marker created with O_EXCL, so it
excludes across nodes on NFS mounts without lockd (where flock silently becomes node-local). Its
holder's thread touches it every `LEASE_S / 3` seconds; a marker left behind by a killed trainer is
taken over at once when its process is gone from this host, and after `LEASE_S` seconds without a
touch otherwise. The holder's host, pid and scheduler job id go to `<run>/.trainer.json`, so a second
trainer can say who holds the run. A requeued job (same job id) waits for the old holder's lease to
run out instead of refusing. Status tools read the same marker as the run's heartbeat
(`heartbeat`): a run whose summary says `running` but whose holder is gone is dead.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import SoftFileLease, Timeout

from trm.rundir import TRAINER_HOLDER as HOLDER_NAME
from trm.rundir import TRAINER_LOCK as LOCK_NAME
from trm.rundir import atomic_write_text, read_json, utc_now
from trm.train.runlog import RunDirError

# Every trainer of a run must agree on it (filelock refuses a marker of another duration).
LEASE_S = 60.0


class RunLockedError(RunDirError):
    """Another live trainer holds this run directory."""


def job_id() -> str:
    """The scheduler's id of the job this process runs in ('' outside a scheduler)."""
    slurm = os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID")
    if slurm:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if os.environ.get("SLURM_JOB_ID"):
        return os.environ["SLURM_JOB_ID"]
    if os.environ.get("LSB_JOBID"):
        index = os.environ.get("LSB_JOBINDEX", "0")
        return os.environ["LSB_JOBID"] + (f"[{index}]" if index not in ("", "0") else "")
    return ""


def _host() -> str:
    return socket.gethostname().split(".")[0]


def _lock_host() -> str:
    """This host as filelock writes it into markers (with a pid-namespace tag inside containers)."""
    try:
        from filelock._identity import host_name  # private, but the one spelling that matches the marker

        return host_name()
    except ImportError:
        return socket.gethostname()


def _bare(host: str) -> str:
    return host.split("?pidns-")[0].split(".")[0]


def _marker(path: Path) -> dict[str, str]:
    """The fields filelock writes into a lease marker (pid, host, duration, ...); {} when absent."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _describe_holder(run_dir: Path) -> str:
    marker = _marker(run_dir / LOCK_NAME)
    info = read_json(run_dir / HOLDER_NAME)
    pid = marker.get("pid") or str(info.get("pid", "?"))
    host = _bare(str(info.get("host") or marker.get("host", "?")))
    job = info.get("job_id") if str(info.get("pid")) == pid else ""
    since = info.get("since", "") if str(info.get("pid")) == pid else ""
    return f"host {host}, pid {pid}" + (f", job {job}" if job else "") + (f", since {since}" if since else "")


class RunLock:
    def __init__(self, run_dir: Path, lease_s: float = LEASE_S) -> None:
        self.run_dir = Path(run_dir)
        self.lease_s = lease_s
        self._lease: SoftFileLease | None = None

    def acquire(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(
                f"cannot create the run directory {self.run_dir}: {e.strerror}; choose a writable "
                f"run.root or fix its permissions"
            ) from None
        lease = SoftFileLease(str(self.run_dir / LOCK_NAME), lease_duration=self.lease_s, timeout=0)
        try:
            try:
                lease.acquire()
            except Timeout:
                holder = read_json(self.run_dir / HOLDER_NAME)
                mine = job_id()
                if not (mine and holder.get("job_id") == mine):
                    raise
                # The same job, requeued: its earlier run may be finishing or gone from another node.
                lease.acquire(timeout=2 * self.lease_s + 5)
        except Timeout:
            raise RunLockedError(
                f"{self.run_dir} is in use by another trainer ({_describe_holder(self.run_dir)}). Two trainers on "
                f"one run directory would overwrite each other's checkpoints and metrics; wait for it to end, stop "
                f"it, or choose another run.name. (A trainer that was killed frees the run at once on this host, "
                f"and after {self.lease_s:g} s without a heartbeat from another host.)"
            ) from None
        except OSError as e:
            raise RunDirError(
                f"cannot take the lock {self.run_dir / LOCK_NAME}: {e.strerror}; is the run directory writable?"
            ) from None
        self._lease = lease
        try:
            atomic_write_text(
                self.run_dir / HOLDER_NAME,
                json.dumps(
                    {
                        "host": _host(),
                        "pid": os.getpid(),
                        "job_id": job_id(),
                        "since": utc_now(),
                    }
                )
                + "\n",
            )
        except OSError as e:
            self.release()
            raise RunDirError(
                f"cannot write {self.run_dir / HOLDER_NAME}: {e.strerror}; is the run directory writable?"
            ) from None

    def release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                lease.release(force=True)
            except OSError:
                pass  # an unwritable folder keeps the marker; its dead pid or stale age frees it

    @property
    def held(self) -> bool:
        return self._lease is not None


def acquire_run_lock(run_dir: Path, env: Any) -> RunLock | None:
    """Rank 0 takes the lock; every rank raises the same error when it could not (no rank hangs)."""
    from trm.train.dist import broadcast_object

    lock, error = None, None
    if env.is_main:
        lock = RunLock(run_dir)
        try:
            lock.acquire()
        except RunDirError as e:
            error = (type(e).__name__, str(e))
    error = broadcast_object(env, error)
    if error is not None:
        raise (RunLockedError if error[0] == "RunLockedError" else RunDirError)(error[1])
    return lock


# ----------------------------------------------------------------------------------------------
# The heartbeat, for status tools


@dataclass(frozen=True)
class Heartbeat:
    alive: bool | None  # None: no trainer has held this run (nothing to tell)
    age_s: float | None  # seconds since the holder last touched the marker
    holder: str  # "host H, pid P, job J"


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:  # a zombie has exited already
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def heartbeat(run_dir: Path, now: float | None = None) -> Heartbeat:
    """Whether the trainer holding `run_dir` is alive: its marker exists and its process is on this host
    and running, or (another host) it touched the marker within two leases."""
    path = Path(run_dir) / LOCK_NAME
    try:
        st = path.stat()
    except OSError:
        return Heartbeat(None, None, "")
    marker = _marker(path)
    age = (time.time() if now is None else now) - st.st_mtime
    holder = _describe_holder(Path(run_dir))
    pid = marker.get("pid", "")
    try:
        duration = float(marker.get("duration") or LEASE_S)
    except ValueError:
        duration = LEASE_S
    if marker.get("host") == _lock_host() and pid.isdigit():
        return Heartbeat(not _pid_gone(int(pid)), age, holder)
    return Heartbeat(age < 2 * duration, age, holder)


def dead_run_message(run_dir: Path) -> str:
    """'' while the run's trainer is alive (or none ever held it); else why the run counts as dead."""
    beat = heartbeat(run_dir)
    if beat.alive is not False:
        return ""
    age = f"{beat.age_s:.0f} s ago" if beat.age_s is not None else "never"
    return (
        f"the trainer ({beat.holder}) is gone without recording an end (last heartbeat {age}); "
        f"see the run's train.log, resume with train.resume=auto"
    )
