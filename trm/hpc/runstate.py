"""`status.json` of a run directory: the cluster layer's view of a run (docs/run-directory.md).

    {"state": "running", "attempts": 2, "preemptions": 1, "timeouts": 0, "job_ids": ["4711"],
     "scheduler": "slurm", "log_paths": [".../logs/4711_0_log.out"], "host": "n-62-20-1",
     "submitted_at": "...", "updated_at": "...", "message": ""}

States: pending (submitted, not started), running, requeued (checkpointed, waiting to run again),
done, failed, cancelled. Writers (the submitting tool, rank 0 of the job) hold a file lock for the
read-modify-write and replace the file atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from trm.data.format import atomic_write_text

STATES = ("pending", "running", "requeued", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_status(run_dir: Path) -> dict[str, Any]:
    """The run's status.json, or {} when it has none (or an unreadable one: a reader retries later)."""
    try:
        data = json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):  # ValueError: also a file that is not UTF-8
        return {}
    return data if isinstance(data, dict) else {}


def update_status(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into status.json under a lock. Special keys: `add_job_id`, `add_log_path`
    (appended once), `count` (a key among attempts/preemptions/timeouts to increment)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir / ".status.lock"), timeout=60):
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
        status["updated_at"] = now()
        atomic_write_text(run_dir / "status.json", json.dumps(status, indent=2) + "\n")
        return status


def start_attempt(run_dir: Path, job_id: str, log_path: str, **changes: Any) -> dict[str, Any]:
    """Record that a job attempt of the run started on this host: state running, one more attempt,
    its job id and log, and the previous attempt's message cleared."""
    import socket

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
