"""The collector on run directories the real trainer wrote (tiny 4x4 Sudoku runs on the CPU)."""

from __future__ import annotations

import csv
from pathlib import Path

from conftest import TINY, run_trainer

from trm.hpc.collect import main

ROOT = Path(__file__).resolve().parents[1]


def test_collects_what_the_trainer_wrote(tmp_path: Path, sudoku4: Path) -> None:
    runs = tmp_path / "runs" / "tiny"
    common = [str(ROOT / "trm" / "configs" / "quickstart.yaml"), *TINY, f"data.data_paths=[{sudoku4}]",
              f"run.root={runs}", "train.max_steps=10"]
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
        base["eval/accuracy:final"])
    assert sorted(p.name for p in out.iterdir()) == ["tiny.csv", "tiny_curves.png", "tiny_final.png"]
