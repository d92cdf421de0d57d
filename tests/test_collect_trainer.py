"""The collector on run directories the real trainer and cluster layer wrote (tiny 4x4 Sudoku runs, CPU)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import TINY, run_trainer

from trm.hpc.collect import main

ROOT = Path(__file__).resolve().parents[1]


def test_collects_what_the_trainer_wrote(tmp_path: Path, sudoku4: Path) -> None:
    runs = tmp_path / "runs" / "tiny"
    common = [
        str(ROOT / "trm" / "configs" / "quickstart.yaml"),
        *TINY,
        f"data.data_paths=[{sudoku4}]",
        f"run.root={runs}",
        "train.max_steps=10",
    ]
    for name, extra in (("baseline", []), ("deeper", ["arch.L_cycles=3"])):
        proc = run_trainer([*common, f"run.name={name}", *extra])
        assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "results"
    assert main([str(runs), "--baseline", "baseline", "--out", str(out), "--quiet"]) == 0
    with (out / "tiny.csv").open(newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    base, deeper = rows["baseline"], rows["deeper"]
    assert (base["state"], base["attempts"], base["step"], base["problems"]) == ("done", "1", "10", "")
    assert deeper["problems"] == "" and deeper["overrides"] == "arch.L_cycles=3"
    assert (base["depth"], deeper["depth"]) == ("6", "8")  # TINY: H_cycles=2, L_layers=1; L_cycles 2 and 3
    assert int(base["num_params"]) > 0 and float(base["wall_time_s"]) > 0
    for row in (base, deeper):
        assert 0 <= float(row["eval/exact_accuracy:final"]) <= 1 and row["eval_step"] == "10"
        assert float(row["eval/exact_accuracy:best"]) >= float(row["eval/exact_accuracy:final"])
    assert float(base["eval/exact_accuracy:delta"]) == 0.0
    assert float(deeper["eval/accuracy:delta"]) == float(deeper["eval/accuracy:final"]) - float(
        base["eval/accuracy:final"]
    )
    assert sorted(p.name for p in out.iterdir()) == ["tiny.csv", "tiny_curves.png", "tiny_final.png"]


@pytest.mark.slow  # two runs through submitit's local executor: about 20 s on 2 cores
def test_collects_a_sweep_submitted_locally(tmp_path: Path, sudoku4: Path) -> None:
    """Spec -> trm.hpc.submit (local profile: submitit's local executor) -> trainer -> collector."""
    from trm.hpc.spec import load_sweep
    from trm.hpc.submit import submit_sweep

    overrides = ", ".join(f"{k}: {v}" for k, v in (item.split("=", 1) for item in TINY))
    spec = tmp_path / "jobs" / "tiny.yaml"
    spec.parent.mkdir()
    spec.write_text(f"""
name: tiny
config: {ROOT / "trm" / "configs" / "quickstart.yaml"}
overrides: {{{overrides}, data.data_paths: [{sudoku4}], train.max_steps: 10}}
baseline: base
runs:
  - name: base
    expected: {{eval/exact_accuracy: 0.0}}
  - name: wider
    overrides: {{arch.hidden_size: 64}}
    expected_delta: {{eval/accuracy: 0.01}}
  - name: later
    overrides: {{arch.L_layers: 2}}
""")
    sweep = load_sweep(spec, runs_root=tmp_path / "runs")
    result = submit_sweep(sweep, runs=sweep.runs[:2], say=lambda line: None)
    assert sorted(result.submitted) == ["base", "wider"] and not result.failed
    out = tmp_path / "results"
    assert main([str(spec), "--runs-root", str(tmp_path / "runs"), "--out", str(out), "--quiet"]) == 0
    with (out / "tiny.csv").open(newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["base", "wider", "later"]
    for name in ("base", "wider"):  # state and attempts from the cluster layer's status.json
        assert (rows[name]["state"], rows[name]["attempts"], rows[name]["problems"]) == ("done", "1", "")
    assert rows["wider"]["overrides"] == "arch.hidden_size=64"
    assert int(rows["wider"]["num_params"]) > int(rows["base"]["num_params"])
    assert rows["base"]["eval/exact_accuracy:expected"] == "0.0"
    assert rows["wider"]["eval/accuracy:expected_delta"] == "0.01" and rows["wider"]["eval/accuracy:delta"]
    assert (rows["later"]["state"], rows["later"]["depth"], rows["later"]["problems"]) == ("not started", "12", "")
