"""Several collectors appending to one shared results file at once, as separate processes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from test_collect import write_run  # tests/ is on sys.path under pytest's default import mode
from waits import limit, wait_for

REPO = Path(__file__).resolve().parents[1]

# One collector process: waits for the start signal, then merges `rounds` sweeps of one run each.
WORKER = """
import sys, time
from pathlib import Path
from trm.hpc.collect import RunEntry, SweepEntry, append_shared, collect_sweep

worker, rounds, shared, tmp = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
(tmp / f"ready-{worker}").touch()
while not (tmp / "go").exists():
    time.sleep(0.005)
for i in range(rounds):
    name = f"w{worker}_{i}"
    result = collect_sweep(SweepEntry(name, tmp, [RunEntry("run", tmp / "runs" / name)]))
    append_shared(shared, [result], timeout_s=60)
"""


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_concurrent_appends_lose_no_row(tmp_path: Path) -> None:
    shared = tmp_path / "results" / "all.csv"
    workers, rounds = 4, 15
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(w), str(rounds), str(shared), str(tmp_path)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    # every worker imported and waits, so their appends overlap (however slow the machine)
    wait_for("the workers to start", lambda: all((tmp_path / f"ready-{w}").exists() for w in range(workers)))
    (tmp_path / "go").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=limit(120))
        assert proc.returncode == 0, err
    rows = read_rows(shared)
    # Without the lock, two read-modify-writes that overlap keep only one side's rows.
    expected = sorted(f"w{w}_{i}" for w in range(workers) for i in range(rounds))
    assert sorted(r["sweep"] for r in rows) == expected
    assert all(r["state"] == "not started" for r in rows)
    assert sorted(p.name for p in shared.parent.iterdir()) == ["all.csv"]  # no temp file, no lock left


def test_collector_processes_of_different_sweeps_share_one_file(tmp_path: Path) -> None:
    for sweep in ("a", "b", "c"):
        for run in ("r1", "r2"):
            write_run(tmp_path / "runs" / sweep, run)
    (tmp_path / "runs" / "c" / "r2" / "summary.json").write_text('{"state": ')  # torn
    shared = tmp_path / "all.csv"
    tool = str(REPO / "tools" / "collect.py")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                tool,
                str(tmp_path / "runs" / sweep),
                "--out",
                str(tmp_path / "results"),
                "--append",
                str(shared),
                "--no-plots",
                "--quiet",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for sweep in ("a", "b", "c")
    ]
    errors = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "2 rows added, 0 rows of the same runs replaced" in out
        errors.append(err)
    assert errors[:2] == ["", ""] and errors[2].startswith("WARNING: c/r2: summary.json is not valid JSON")
    assert sorted((r["sweep"], r["name"]) for r in read_rows(shared)) == [
        (s, r) for s in ("a", "b", "c") for r in ("r1", "r2")
    ]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["a.csv", "b.csv", "c.csv"]
