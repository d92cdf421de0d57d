"""The run directory `runs/<sweep>/<run>/`: its file names, how they are written and read, status.json.

    paths = RunPaths(run_dir)
    atomic_write_json(paths.summary, {"step": 120})    # a reader sees the old file or the new one
    read_json(paths.summary)                           # {} when missing, torn or not an object
    update_status(run_dir, state="running", count="attempts")

The trainer (trm/train/runlog.py, runlock.py), the cluster layer (trm/hpc) and the collector all
name these files through this module; docs/run-directory.md says who writes each one and when.
Ground floor: imports only the standard library and filelock, so any layer may use it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

CONFIG = "config.yaml"
STATUS = "status.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
TRAIN_LOG = "train.log"
WANDB_ID = "wandb_id"
CHECKPOINTS = "checkpoints"
STATUS_LOCK = ".status.lock"
TRAINER_LOCK = ".trainer.lock"
TRAINER_HOLDER = ".trainer.json"
# A folder holding any of these is a run directory (the collector and tools/status.py accept it).
RUN_FILES = (CONFIG, SUMMARY, METRICS, STATUS)
DEFAULT_RUNS_ROOT = "runs"
# The headline metric of tables and plots when a sweep names none: a key of metrics.jsonl's eval
# lines and of summary.json's `final`/`best`.
DEFAULT_METRIC = "eval/exact_accuracy"

# The trainer's exit codes: what happened, for whoever runs it (trm.train.preempt, trm.hpc, queues).
EXIT_REQUEUE = 75  # EX_TEMPFAIL: "checkpointed, please requeue"
EXIT_STOPPED = 143  # 128 + SIGTERM: "checkpointed and stopped on request; do not requeue"
EXIT_FAILED = 1  # the run failed (a non-finite loss, an unwritable run directory): status.json says why

# status.json's states: pending (submitted, not started), running, requeued (checkpointed, waiting
# to run again), done, failed, cancelled.
STATES = ("pending", "running", "requeued", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class RunPaths:
    """Where each file of one run directory lives."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def status(self) -> Path:
        return self.root / STATUS

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG

    @property
    def wandb_id(self) -> Path:
        return self.root / WANDB_ID

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def trainer_lock(self) -> Path:
        return self.root / TRAINER_LOCK

    @property
    def trainer_holder(self) -> Path:
        return self.root / TRAINER_HOLDER

    def has_results(self) -> bool:
        """Something a run left that a new run of the same name must not overwrite."""
        return any(p.exists() for p in (self.summary, self.metrics, self.checkpoints))

    def exists(self) -> bool:
        """Anything of a run here: a submitted (status, config) or a trained one."""
        return any((self.root / name).exists() for name in (*RUN_FILES, CHECKPOINTS))


def looks_like_run_dir(path: Path) -> bool:
    return Path(path).is_dir() and any((Path(path) / name).exists() for name in RUN_FILES)


def resolve_runs_root(explicit: str | Path | None, profile_root: str = "") -> Path:
    """Where `<sweep>/<run>` directories go: the caller's choice, else the profile's, else ./runs."""
    return Path(explicit if explicit is not None else (profile_root or DEFAULT_RUNS_ROOT)).expanduser().resolve()


def utc_now() -> str:
    """The timestamp format of every run file (`updated_at`, `submitted_at`): UTC to the second."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# Writers


def umask_mode() -> int:
    """The mode `open()` would give a new file (mkstemp makes 0600; run files and datasets are shared)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_with(
    path: Path, write: Callable[[IO[bytes]], None], mode: int | None = None, keep_mode: bool = False
) -> None:
    """Write through `write(f)` to a temporary name in the same folder, fsync, rename: a reader sees
    the old file or the new one, never a part. If the writer dies before the rename, `path` is
    untouched (a hidden `.<name>.*.tmp` may be left behind; nothing reads those).

    `mode`: the new file's permission bits (default: as `open()` would make it). `keep_mode`: an
    existing file keeps its permission bits and group (a shared queue file stays shared)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = _stat_or_none(path) if keep_mode else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if old is not None:
            try:
                os.chown(tmp, -1, old.st_gid)
            except OSError:
                pass  # not a member of that group: keep ours
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
        else:
            os.chmod(tmp, umask_mode() if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None, keep_mode: bool = False) -> None:
    atomic_write_with(path, lambda f: f.write(data), mode=mode, keep_mode=keep_mode)


def atomic_write_text(path: Path, text: str, mode: int | None = None, keep_mode: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, keep_mode=keep_mode)


def atomic_write_json(path: Path, data: Any, trailing_newline: bool = True) -> None:
    """JSON with an indent of 2, as every run file is written (status.json ends in a newline,
    summary.json does not: both are kept as they were)."""
    atomic_write_text(path, json.dumps(data, indent=2) + ("\n" if trailing_newline else ""))


def append_line(path: Path, line: str) -> None:
    """One line appended (metrics.jsonl, train.log): a reader may see the last line without its
    newline yet, and must treat such a tail as still being written."""
    with open(path, "a") as f:
        f.write(line + "\n")


# Readers


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing, unreadable, torn or not an object: the
    callers are status readers that look again later, never the place to report a damaged file
    (the collector reports those itself)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # ValueError: also a file that is not UTF-8
        return {}
    return data if isinstance(data, dict) else {}


# status.json: the cluster layer's record of a run
#
#     {"state": "running", "attempts": 2, "preemptions": 1, "timeouts": 0, "job_ids": ["4711"],
#      "scheduler": "slurm", "log_paths": [".../logs/4711_0_log.out"], "host": "n-62-20-1",
#      "submitted_at": "...", "updated_at": "...", "message": ""}
#
# Writers (the submitting tool, rank 0 of the job) hold a file lock for the read-modify-write and
# replace the file atomically, so a reader never sees half of it.


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's status.json, or {} when it has none (or an unreadable one: a reader retries later)."""
    return read_json(Path(run_dir) / STATUS)


def write_status(run_dir: Path, status: dict[str, Any]) -> None:
    """Replace status.json as it is (an undo of a refused submission puts the previous one back)."""
    atomic_write_json(Path(run_dir) / STATUS, status)


def update_status(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into status.json under a lock. Special keys: `add_job_id`, `add_log_path`
    (appended once), `count` (a key among attempts/preemptions/timeouts to increment)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir / STATUS_LOCK), timeout=60):
        status = read_status(run_dir)
        for key in ("attempts", "preemptions", "timeouts"):
            status.setdefault(key, 0)
        status.setdefault("job_ids", [])
        status.setdefault("log_paths", [])
        for key, list_key in (("add_job_id", "job_ids"), ("add_log_path", "log_paths")):
            value = changes.pop(key, None)
            if value is not None and str(value) not in status[list_key]:
                status[list_key].append(str(value))
        counted = changes.pop("count", None)
        if counted:
            status[counted] = int(status.get(counted, 0)) + 1
        if "state" in changes and changes["state"] not in STATES:
            raise ValueError(f"unknown run state {changes['state']!r}; expected one of {STATES}")
        status.update(changes)
        status["updated_at"] = utc_now()
        write_status(run_dir, status)
        return status


def start_attempt(run_dir: Path, job_id: str, log_path: str, **changes: Any) -> dict[str, Any]:
    """Record that a job attempt of the run started on this host: state running, one more attempt,
    its job id and log, and the previous attempt's message cleared."""
    return update_status(
        run_dir,
        state="running",
        count="attempts",
        add_job_id=job_id,
        host=socket.gethostname(),
        message="",
        add_log_path=log_path,
        **changes,
    )
