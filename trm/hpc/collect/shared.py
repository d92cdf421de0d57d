"""One results file shared by several sweeps or users, merged under a lock that works on NFS.

added, replaced = append_shared(Path("results/all.csv"), results)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from trm.hpc.collect.output import columns, csv_text, row_values
from trm.hpc.collect.rows import SweepResult
from trm.hpc.collect.sweep import CollectError
from trm.rundir import atomic_write_text

# Lease of the shared results file's lock; fixed, because every collector of one file must agree on it.
SHARED_LEASE_S = 30.0


def append_shared(
    path: Path, results: list[SweepResult], timeout_s: float = 60.0, lease_s: float = SHARED_LEASE_S
) -> tuple[int, int]:
    """Merge these rows into a results file several sweeps or users share; returns (added, replaced).

    The read-modify-write holds a `filelock.SoftFileLease` on `<file>.lock`: a marker file created
    with O_EXCL, which excludes across nodes even on NFS mounts without lockd (where flock silently
    becomes node-local). Its holder refreshes it, so only a marker left by a killed collector expires:
    at once when that process is gone from this host, after `lease_s` without a refresh otherwise.
    Every collector of one file must use the same `lease_s`. A run already in the file (same run_dir)
    has its row replaced, not duplicated; new metric columns are added for every row.
    """
    from filelock import SoftFileLease, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = SoftFileLease(f"{path}.lock", lease_duration=lease_s, timeout=timeout_s)
    new_header: list[str] = []
    new_rows: list[dict[str, Any]] = []
    for result in results:
        new_header += [c for c in columns(result) if c not in new_header]
        new_rows += [row_values(r) for r in result.rows]
    try:
        with lock:
            header, rows = _read_shared(path)
            header += [c for c in new_header if c not in header]
            index = {row["run_dir"]: i for i, row in enumerate(rows)}
            added = replaced = 0
            for row in new_rows:
                if row["run_dir"] in index:
                    rows[index[row["run_dir"]]] = row
                    replaced += 1
                else:
                    index[row["run_dir"]] = len(rows)
                    rows.append(row)
                    added += 1
            atomic_write_text(path, csv_text(header, rows))
    except Timeout:
        raise CollectError(
            f"{path}: could not take the lock {path}.lock within {timeout_s:g} s: another "
            f"collector holds it (a lock its holder stopped refreshing expires after "
            f"{lease_s:g} s); try again, or raise --lock-timeout"
        ) from None
    return added, replaced


def _read_shared(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    if not path.exists():
        return [], []
    try:
        return _parse_shared(path)
    except (UnicodeDecodeError, csv.Error) as e:
        raise CollectError(
            f"{path}: cannot be read as a UTF-8 CSV ({e}); refusing to rewrite it (fix or move it, "
            f"or choose another file)"
        ) from None


def _parse_shared(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        if "run_dir" not in header:
            raise CollectError(
                f"{path}: has no 'run_dir' column, so it was not written by "
                f"`tools/collect.py --append`; refusing to rewrite it (choose another file)"
            )
        rows = []
        for row in reader:
            if None in row:
                raise CollectError(
                    f"{path}: line {reader.line_num} has more fields than the header; "
                    f"refusing to rewrite a damaged results file (fix or move it)"
                )
            rows.append(row)
    return header, rows
