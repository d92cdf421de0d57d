"""The collector's outputs: CSV, printed and Markdown tables, PNG plots, CLI, shared file, wandb sync."""

from __future__ import annotations

import csv
import logging
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_collect import ACC, write_run  # tests/ is on sys.path under pytest's default import mode
from waits import limit

from trm.hpc.collect import (
    CollectError,
    RunEntry,
    SweepEntry,
    append_shared,
    collect_sweep,
    format_markdown,
    format_table,
    main,
    sweep_from_folder,
    sync_wandb,
    write_csv,
)
from trm.hpc.collect.plots import plot_sweep


def ablation(root: Path) -> SweepEntry:
    """A maze-ablation-like sweep: a baseline, a finished ablation, a running one, a damaged one."""
    s = root / "runs" / "abl"
    write_run(s, "baseline", evals=[(100, 0.5), (200, 0.8), (300, 0.85)])
    write_run(s, "no_ema", evals=[(100, 0.45), (200, 0.7), (300, 0.775)], overrides=["ema=false"])
    write_run(s, "T2_n2", evals=[(100, 0.3), (200, 0.5)], overrides=["arch.L_cycles=2"], state="running")
    (write_run(s, "broken", evals=[(100, 0.2)]) / "summary.json").write_text("{")
    runs = [
        RunEntry("baseline", s / "baseline", expected={ACC: 0.853}),
        RunEntry("no_ema", s / "no_ema", expected_delta={ACC: -0.075}),
        RunEntry("T2_n2", s / "T2_n2", expected_delta={ACC: -0.137}),
        RunEntry("broken", s / "broken"),
    ]
    return SweepEntry("abl", root / "jobs" / "abl.yaml", runs, baseline="baseline")


def read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = {row["name"]: row for row in reader}
        return list(reader.fieldnames or []), rows


def test_csv_has_one_row_per_run_with_deltas_and_expectations(tmp_path: Path) -> None:
    result = collect_sweep(ablation(tmp_path))
    path = tmp_path / "results" / "abl.csv"
    write_csv(result, path)
    header, rows = read_csv(path)
    assert header[:14] == [
        "sweep",
        "name",
        "overrides",
        "num_params",
        "depth",
        "state",
        "attempts",
        "step",
        "total_steps",
        "epoch",
        "wall_time_s",
        "gpu_hours",
        "eval_step",
        "updated_at",
    ]
    assert header[14:20] == [
        f"{ACC}:final",
        f"{ACC}:best",
        f"{ACC}:best_step",
        f"{ACC}:delta",
        f"{ACC}:expected",
        f"{ACC}:expected_delta",
    ]
    assert "eval/steps:final" in header and "eval/steps:best" not in header and header[-2:] == ["problems", "run_dir"]
    assert list(rows) == ["baseline", "no_ema", "T2_n2", "broken"]
    assert float(rows["no_ema"][f"{ACC}:final"]) == 0.775
    assert float(rows["no_ema"][f"{ACC}:delta"]) == pytest.approx(-0.075)
    assert float(rows["no_ema"][f"{ACC}:expected_delta"]) == -0.075
    assert float(rows["baseline"][f"{ACC}:expected"]) == 0.853
    assert rows["no_ema"]["overrides"] == "train.ema=false" and rows["T2_n2"]["depth"] == "12"
    assert (rows["T2_n2"]["state"], rows["T2_n2"]["eval_step"]) == ("running", "200")
    assert rows["broken"]["problems"].startswith("summary.json is not valid JSON")
    assert rows["baseline"]["problems"] == "" and Path(rows["baseline"]["run_dir"]).is_absolute()
    assert sorted(p.name for p in path.parent.iterdir()) == ["abl.csv"]  # no temporary file left behind


def test_printed_and_markdown_tables(tmp_path: Path) -> None:
    result = collect_sweep(ablation(tmp_path))
    lines = format_table(result).splitlines()
    assert lines[0] == f"abl  ({tmp_path / 'jobs' / 'abl.yaml'}; metric {ACC}; baseline baseline)"
    assert lines[1].split() == [
        "name",
        "overrides",
        "params",
        "depth",
        "state",
        "att",
        "step",
        "epoch",
        "wall",
        "GPU-h",
        f"{ACC}",
        "final",
        "best",
        "@step",
        "Δ",
        "expected",
        "exp",
        "Δ",
        "problems",
    ]
    no_ema = next(line for line in lines if line.startswith("no_ema"))
    assert no_ema.split() == [
        "no_ema",
        "train.ema=false",
        "12.35k",
        "16",
        "done",
        "1",
        "300",
        "30.0",
        "2.5m",
        "0.2",
        "77.5%",
        "77.5%",
        "300",
        "-7.5",
        "-7.5",
    ]
    broken = next(line for line in lines if line.startswith("broken"))
    assert broken.endswith("...") and len(broken.split("  ")[-1].strip()) == 60
    md = format_markdown(result).splitlines()
    assert md[:4] == ["### abl", "", f"Metric `{ACC}`, deltas against `baseline` in percentage points.", ""]
    assert md[4].startswith("| name | overrides |") and md[5].startswith("| --- | --- | ---: |")
    assert md[5].endswith("---: | --- |")
    assert md[6].startswith("| baseline (baseline) |  | 12.35k | 16 | done |")
    assert len(md) == 6 + 4  # one line per run
    broken_md = md[-1]
    assert "summary.json is not valid JSON" in broken_md and not broken_md.endswith("...")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plots_are_written(tmp_path: Path) -> None:
    result = collect_sweep(ablation(tmp_path))
    written = plot_sweep(result, tmp_path / "results")
    assert [p.name for p in written] == ["abl_curves.png", "abl_final.png"]
    for path in written:
        width, height = png_size(path)
        assert width > 400 and height > 300 and path.stat().st_size > 10_000


def test_no_plot_without_evals(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_run(tmp_path / "s", "r", state="running", lines=[{"event": "train", "step": 5}])
    with caplog.at_level(logging.WARNING):
        assert plot_sweep(collect_sweep(sweep_from_folder(tmp_path / "s")), tmp_path / "out") == []
    assert "no run has an eval of eval/exact_accuracy yet: s_curves.png not drawn" in caplog.text
    assert not (tmp_path / "out").exists()


def test_cli_writes_csv_markdown_plots_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ablation(tmp_path)
    out = tmp_path / "results"
    argv = [str(tmp_path / "runs" / "abl"), "--baseline", "baseline", "--out", str(out), "--markdown"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "no_ema" in printed and "-7.5" in printed
    assert sorted(p.name for p in out.iterdir()) == ["abl.csv", "abl.md", "abl_curves.png", "abl_final.png"]
    first = (out / "abl.csv").read_text()
    write_run(tmp_path / "runs" / "abl", "extra")  # the sweep grew: collecting again updates the CSV
    assert main([*argv, "--no-plots", "--quiet"]) == 0
    assert (out / "abl.csv").read_text() != first and "extra" in read_csv(out / "abl.csv")[1]
    assert "abl: 5 runs ->" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing_dir"], "error: 'missing_dir' does not exist"),
        (["runs/abl", "--baseline", "nope"], "error: runs/abl: baseline 'nope' is not a run of sweep 'abl'"),
    ],
)
def test_cli_bad_input_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    ablation(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


def test_shared_file_adds_then_replaces_rows_and_unions_columns(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "all.csv"
    abl = collect_sweep(ablation(tmp_path))
    assert append_shared(shared, [abl]) == (4, 0)
    write_run(
        tmp_path / "grid",
        "L1",
        overrides=["arch.L_layers=1"],
        lines=[{"event": "eval", "step": 10, "eval/ARC/pass@2": 0.3}],
    )
    grid = collect_sweep(sweep_from_folder(tmp_path / "grid", metric="eval/ARC/pass@2"))
    assert append_shared(shared, [grid, abl]) == (1, 4)
    header, _ = read_csv(shared)
    with shared.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["sweep"], r["name"]) for r in rows] == [
        ("abl", "baseline"),
        ("abl", "no_ema"),
        ("abl", "T2_n2"),
        ("abl", "broken"),
        ("grid", "L1"),
    ]
    assert "eval/ARC/pass@2:final" in header and f"{ACC}:expected" in header
    assert rows[-1]["eval/ARC/pass@2:final"] == "0.3" and rows[-1][f"{ACC}:final"] == ""


def test_shared_file_refuses_foreign_or_damaged_csv(tmp_path: Path) -> None:
    abl = collect_sweep(ablation(tmp_path))
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("model,accuracy\nx,0.5\n")
    with pytest.raises(CollectError, match="has no 'run_dir' column"):
        append_shared(foreign, [abl])
    assert foreign.read_text() == "model,accuracy\nx,0.5\n"
    damaged = tmp_path / "damaged.csv"
    damaged.write_text("sweep,name,run_dir\na,b,/x,extra\n")
    with pytest.raises(CollectError, match="line 2 has more fields than the header"):
        append_shared(damaged, [abl])


def hold_lock(lock_file: Path, lease_s: float) -> subprocess.Popen[str]:
    """Another collector process that takes the shared file's lock and keeps it."""
    code = (
        f"from filelock import SoftFileLease; import time; "
        f"lock = SoftFileLease({str(lock_file)!r}, lease_duration={lease_s}); lock.acquire(); "
        f"print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_shared_file_lock_waits_for_a_live_holder_and_survives_a_dead_one(tmp_path: Path) -> None:
    abl = collect_sweep(ablation(tmp_path))
    shared = tmp_path / "all.csv"
    lock_file = Path(f"{shared}.lock")
    holder = hold_lock(lock_file, lease_s=2.0)
    try:
        start = time.monotonic()
        with pytest.raises(CollectError, match="could not take the lock .*all.csv.lock within 2.5 s"):
            append_shared(shared, [abl], timeout_s=2.5, lease_s=2.0)  # refreshed: outlives its lease
        assert time.monotonic() - start >= 2.5 and not shared.exists()
    finally:
        holder.kill()
        holder.wait()
    # A collector killed while holding the lock (walltime, OOM) leaves its marker; a dead local owner
    # frees it at once: with a lease far longer than the wait, only that can let this one through.
    assert lock_file.exists()
    assert append_shared(shared, [abl], timeout_s=limit(10), lease_s=3600) == (4, 0)
    # A marker nobody refreshes (its owner on another node) expires after the lease.
    lock_file.write_text("filelock/2\npid=1\nhost=another-node\n")
    start = time.monotonic()
    assert append_shared(shared, [abl], timeout_s=10, lease_s=1.0) == (0, 4)
    assert time.monotonic() - start >= 1.0


def fake_wandb(tmp_path: Path, rc: int) -> Path:
    """A `wandb` on PATH that records its arguments: the real one needs a network and an account."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "wandb"
    exe.write_text(
        f'#!/bin/sh\necho "$@" >> "{tmp_path}/wandb_calls.txt"\necho "wandb: network error" >&2\nexit {rc}\n'
    )
    exe.chmod(0o755)
    return bin_dir


def test_wandb_sync_gets_each_runs_offline_segments_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = ablation(tmp_path)
    base = tmp_path / "runs" / "abl" / "baseline"
    for seg in ("offline-run-20260102_000000-abc", "offline-run-20260101_000000-abc"):  # two attempts
        (base / "wandb" / seg).mkdir(parents=True)
    (tmp_path / "runs" / "abl" / "no_ema" / "wandb" / "offline-run-20260101_000000-xyz").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(fake_wandb(tmp_path, rc=0)))
    synced, errors = sync_wandb([collect_sweep(sweep)])
    assert (synced, errors) == (2, [])
    calls = (tmp_path / "wandb_calls.txt").read_text().splitlines()
    assert calls == [
        f"sync {base}/wandb/offline-run-20260101_000000-abc {base}/wandb/offline-run-20260102_000000-abc",
        f"sync {tmp_path}/runs/abl/no_ema/wandb/offline-run-20260101_000000-xyz",
    ]


def test_cli_wandb_failure_keeps_the_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ablation(tmp_path)
    (tmp_path / "runs" / "abl" / "baseline" / "wandb" / "offline-run-20260101_000000-abc").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(fake_wandb(tmp_path, rc=1)))
    out = tmp_path / "results"
    assert main([str(tmp_path / "runs" / "abl"), "--out", str(out), "--no-plots", "--quiet", "--wandb"]) == 1
    assert "abl/baseline: wandb sync exited with 1: wandb: network error" in capsys.readouterr().err
    assert (out / "abl.csv").exists()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert main([str(tmp_path / "runs" / "abl"), "--out", str(out), "--no-plots", "--quiet", "--wandb"]) == 1
    assert "the `wandb` command is not installed" in capsys.readouterr().err
