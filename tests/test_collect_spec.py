"""The collector given a sweep spec (jobs/<sweep>.yaml): its runs, baseline, metric and expectations."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_collect import ACC, write_run  # tests/ is on sys.path under pytest's default import mode

from trm.hpc.collect import collect, main

QUICKSTART = Path(__file__).resolve().parents[1] / "trm" / "configs" / "quickstart.yaml"


def write_spec(tmp_path: Path, extra: str = "") -> Path:
    spec = tmp_path / "jobs" / "maze_ablations.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(f"""
name: maze_ablations
config: {QUICKSTART}
overrides: {{epochs: 60000}}
baseline: baseline
metric: {ACC}
runs:
  - name: baseline
    expected: {{{ACC}: 0.853}}
  - name: no_ema
    overrides: {{ema: false}}
    expected_delta: {{{ACC}: -0.075}}
grid: {{arch.L_layers: [1, 4]}}
{extra}""")
    return spec


def test_spec_runs_in_spec_order_with_expectations(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    runs = tmp_path / "runs" / "maze_ablations"
    write_run(runs, "baseline", evals=[(100, 0.5), (200, 0.85)], overrides=["epochs=60000"])
    write_run(runs, "no_ema", evals=[(100, 0.4), (200, 0.77)], overrides=["epochs=60000", "ema=false"], state="running")
    # The grid's runs were never started: a partial sweep still gives their rows.
    (result,) = collect([spec], runs_root=tmp_path / "runs")
    names = [r.name for r in result.rows]
    assert names[:2] == ["baseline", "no_ema"] and len(names) == 4 and all("L_layers" in n for n in names[2:])
    assert (result.name, result.baseline, result.metric) == ("maze_ablations", "baseline", ACC)
    base, no_ema, grid1, grid4 = result.rows
    assert base.expected == {ACC: 0.853} and no_ema.expected_delta == {ACC: -0.075}
    assert no_ema.delta[ACC] == pytest.approx(-0.08) and no_ema.state == "running"
    assert no_ema.overrides == "train.ema=false"
    # Runs not started yet: their config comes from the spec, so depth and overrides are known.
    assert (grid1.state, grid1.problems, grid1.final) == ("not started", [], {})
    assert (grid1.depth, grid4.depth) == (2 * 4 * 1, 2 * 4 * 4)
    assert (grid1.overrides, grid4.overrides) == ("arch.L_layers=1", "arch.L_layers=4")
    assert result.warnings == []


def test_spec_cli_writes_results_named_after_the_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    spec = write_spec(tmp_path)
    runs = tmp_path / "runs" / "maze_ablations"
    write_run(runs, "baseline", evals=[(100, 0.85)], overrides=["epochs=60000"])
    write_run(runs, "stray", evals=[(100, 0.1)])  # a run dir the spec does not name
    out = tmp_path / "results"
    assert main([str(spec), "--runs-root", str(tmp_path / "runs"), "--out", str(out), "--no-plots"]) == 0
    assert "85.3%" in capsys.readouterr().out  # the expectation printed beside the measurement
    assert "holds run directories the spec does not name (not collected): stray" in caplog.text
    with (out / "maze_ablations.csv").open(newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert "stray" not in rows and rows["baseline"][f"{ACC}:expected"] == "0.853"
    assert rows["no_ema"]["state"] == "not started" and rows["no_ema"][f"{ACC}:expected_delta"] == "-0.075"


def test_spec_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, extra="bogus: 1\n")
    assert main([str(spec), "--runs-root", str(tmp_path / "runs"), "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown key 'bogus'" in err and "Traceback" not in err
    spec = write_spec(tmp_path)
    assert main([str(spec), "--baseline", "nope", "--runs-root", str(tmp_path / "runs")]) == 2
    assert "baseline 'nope' is not a run of sweep 'maze_ablations'" in capsys.readouterr().err


def test_spec_metric_can_be_overridden(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    write_run(tmp_path / "runs" / "maze_ablations", "baseline", overrides=["epochs=60000"])
    (result,) = collect([spec], runs_root=tmp_path / "runs", metric="eval/accuracy")
    assert result.metric == "eval/accuracy" and result.metrics[0] == "eval/accuracy"
    assert json.dumps(result.row("baseline").final["eval/accuracy"]) == "0.9"
