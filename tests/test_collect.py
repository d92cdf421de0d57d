"""The collector's reading of run directories and its rows: tolerant reading, deltas, expectations."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

import trm
from trm.config import load_config, to_yaml
from trm.hpc.collect import (
    CollectError,
    RunEntry,
    SweepEntry,
    collect,
    collect_sweep,
    config_as_text,
    flat_yaml,
    read_run,
    sweep_from_folder,
)

CONFIGS = Path(trm.__file__).parent / "configs"
QUICKSTART = CONFIGS / "quickstart.yaml"
ACC = "eval/exact_accuracy"


def train_line(step: int, **extra: Any) -> dict[str, Any]:
    return {"event": "train", "step": step, "epoch": step / 10, "time_s": step * 0.5, "train/loss": 1.0 / step, **extra}


def eval_line(step: int, acc: float, **extra: Any) -> dict[str, Any]:
    return {
        "event": "eval",
        "step": step,
        "epoch": step / 10,
        "time_s": step * 0.5,
        ACC: acc,
        "eval/accuracy": (1 + acc) / 2,
        "eval/q_halt_accuracy": 0.9,
        "eval/steps": 3.0,
        "eval/lm_loss": 1 - acc,
        **extra,
    }


def write_run(
    root: Path,
    name: str,
    evals: list[tuple[int, float]] = ((100, 0.5), (200, 0.8)),
    state: str | None = "done",
    overrides: list[str] = (),
    status: dict[str, Any] | None = None,
    lines: list[Any] | None = None,
    summary: dict[str, Any] | None = None,
) -> Path:
    """A run directory as docs/run-directory.md describes it; `lines` replaces the generated metrics."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(load_config(QUICKSTART, [*overrides, f"run.name={name}"])))
    if lines is None:
        lines = []
        for step, acc in evals:
            lines += [train_line(step - 50), eval_line(step, acc)]
    (run_dir / "metrics.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    if state is not None:
        last = max((x["step"] for x in lines if isinstance(x, dict)), default=0)
        data = {
            "run_name": name,
            "state": state,
            "step": last,
            "total_steps": 200,
            "epoch": last / 10,
            "num_params": 12345,
            "config_hash": "abc",
            "world_size": 1,
            "device": "cpu",
            "wall_time_s": last * 0.5,
            "gpu_hours": 0.25,
            "samples_per_s": 100.0,
            "attempts": 1,
            "final": {},
            "best": {},
            "updated_at": "2026-01-01T00:00:00Z",
            **(summary or {}),
        }
        (run_dir / "summary.json").write_text(json.dumps(data))
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps(status))
    return run_dir


def test_complete_run_gives_every_column(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep", "a", evals=[(100, 0.5), (200, 0.8), (300, 0.75)])
    (row,) = collect_sweep(sweep_from_folder(tmp_path / "sweep")).rows
    assert (row.name, row.state, row.attempts, row.num_params) == ("a", "done", 1, 12345)
    assert row.depth == 2 * (3 + 1) * 2  # quickstart: H_cycles=2, L_cycles=3, L_layers=2
    assert (row.step, row.epoch, row.wall_time_s, row.gpu_hours) == (300, 30.0, 150.0, 0.25)
    assert row.eval_step == 300
    assert row.final[ACC] == 0.75 and row.best[ACC] == (0.8, 200)
    assert row.best["eval/lm_loss"] == pytest.approx((0.2, 200))  # losses: lower is better
    assert "eval/steps" not in row.best  # halting steps have no "best"
    assert row.curves[ACC] == [(100, 0.5), (200, 0.8), (300, 0.75)]
    assert row.problems == []


@pytest.mark.parametrize(
    ("overrides", "depth"),
    [
        (["arch.H_cycles=3", "arch.L_cycles=6", "arch.L_layers=2"], 42),  # the seeds' table: baseline T=3, n=6
        (["arch.H_cycles=2", "arch.L_cycles=2", "arch.L_layers=2"], 12),  # T=2, n=2
        (["arch.H_cycles=3", "arch.L_cycles=3", "arch.L_layers=4"], 48),  # 4 layers, n=3
    ],
)
def test_effective_depth_from_config(tmp_path: Path, overrides: list[str], depth: int) -> None:
    write_run(tmp_path / "s", "r", overrides=overrides)
    assert collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0].depth == depth


def test_resume_duplicates_keep_the_last_line_per_step(tmp_path: Path) -> None:
    # Attempt 1 ran to step 300 and was preempted; the checkpoint was at 200, so 300 ran again.
    lines = [
        train_line(100),
        eval_line(200, 0.6),
        train_line(250),
        eval_line(300, 0.1),
        train_line(350, x=1),
        train_line(250),
        eval_line(300, 0.7),
        train_line(350, x=2),
    ]
    write_run(tmp_path / "s", "r", lines=lines)
    files = read_run(tmp_path / "s" / "r")
    assert [e["step"] for e in files.evals] == [200, 300]
    assert files.evals[1][ACC] == 0.7 and files.last_train["x"] == 2
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert row.final[ACC] == 0.7 and row.curves[ACC] == [(200, 0.6), (300, 0.7)]


def test_torn_summary_is_a_problem_and_the_other_rows_still_come(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_run(tmp_path / "s", "good")
    bad = write_run(tmp_path / "s", "torn", evals=[(100, 0.4)])
    (bad / "summary.json").write_text('{"run_name": "torn", "state": "do')
    with caplog.at_level(logging.WARNING):
        result = collect_sweep(sweep_from_folder(tmp_path / "s"))
    good, torn = result.row("good"), result.row("torn")
    assert good.problems == [] and good.final[ACC] == 0.8
    assert len(torn.problems) == 1 and "summary.json is not valid JSON" in torn.problems[0]
    assert torn.final[ACC] == 0.4 and torn.step == 100  # metrics.jsonl still read
    assert torn.state == "unknown"  # nothing says what the run is doing
    assert "s/torn: summary.json is not valid JSON" in caplog.text


def test_missing_summary_and_empty_status(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "nosummary", state=None)
    empty = write_run(tmp_path / "s", "emptystatus")
    (empty / "status.json").write_text("")
    result = collect_sweep(sweep_from_folder(tmp_path / "s"))
    assert result.row("nosummary").problems == ["no summary.json yet (the trainer writes it at its first log interval)"]
    assert result.row("nosummary").final[ACC] == 0.8 and result.row("nosummary").step == 200
    assert result.row("emptystatus").problems == ["status.json is empty: a torn write or a damaged file"]
    assert result.row("emptystatus").state == "done"  # summary.json still speaks


def test_pending_run_without_summary_is_not_a_problem(tmp_path: Path) -> None:
    run_dir = tmp_path / "s" / "queued"
    run_dir.mkdir(parents=True)
    (run_dir / "status.json").write_text(json.dumps({"state": "pending", "attempts": 0}))
    (row,) = collect_sweep(sweep_from_folder(tmp_path / "s")).rows
    assert (row.state, row.attempts, row.problems, row.final) == ("pending", 0, [], {})


def test_lines_that_are_not_json_are_reported_by_number(tmp_path: Path) -> None:
    lines = [
        train_line(50),
        eval_line(100, 0.3),
        "not json",
        '{"event": "eval"}',
        "[1, 2]",
        "",
        eval_line(200, 0.9),
        '{"event": "train", "step": true}',
    ]
    write_run(tmp_path / "s", "r", lines=lines)
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert row.final[ACC] == 0.9 and len(row.curves[ACC]) == 2
    assert row.problems == [
        "metrics.jsonl: 4 line(s) are not a JSON object with 'event' and an integer 'step' (line 3, 4, 5, 8); skipped"
    ]


def test_null_eval_value_is_nan_and_never_best(tmp_path: Path) -> None:
    # The trainer writes NaN and inf as null: a diverged run is a result, not a damaged file.
    write_run(tmp_path / "s", "r", lines=[eval_line(100, 0.5), eval_line(200, 0.6, **{"eval/lm_loss": None})])
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert math.isnan(row.final["eval/lm_loss"]) and row.best["eval/lm_loss"] == (0.5, 100)
    assert row.problems == []


def test_non_numeric_eval_value_is_skipped(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "r", lines=[eval_line(100, 0.5, **{"eval/steps": "many"})])
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert "eval/steps" not in row.final and row.final[ACC] == 0.5
    assert row.problems == ["metrics.jsonl: eval at step 100: eval/steps = 'many' is not a number; skipped"]


@pytest.mark.parametrize(("state", "reported"), [("running", False), ("done", True)])
def test_torn_last_line_is_expected_only_while_running(tmp_path: Path, state: str, reported: bool) -> None:
    run_dir = write_run(tmp_path / "s", "r", state=state)
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"event": "eval", "step": 300, "eval/exact_acc')  # the trainer is mid-append
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert row.eval_step == 200 and row.final[ACC] == 0.8
    assert bool(row.problems) == reported
    if reported:
        assert "last line is incomplete" in row.problems[0]


def test_last_line_without_newline_that_parses_counts(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "s", "r", state="running")
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(eval_line(300, 0.95)))
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert (row.eval_step, row.final[ACC], row.step, row.problems) == (300, 0.95, 300, [])


def test_status_json_wins_over_summary(tmp_path: Path) -> None:
    write_run(
        tmp_path / "s",
        "r",
        state="checkpointed",
        summary={"attempts": 2},
        status={"state": "requeued", "attempts": 3, "updated_at": "2026-02-02T00:00:00Z"},
    )
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert (row.state, row.attempts, row.updated_at) == ("requeued", 3, "2026-02-02T00:00:00Z")


def test_failed_run_shows_the_cluster_layers_message(tmp_path: Path) -> None:
    write_run(
        tmp_path / "s",
        "r",
        state="running",
        status={"state": "failed", "attempts": 2, "message": "exit code 1: CUDA out of memory"},
    )
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert (row.state, row.attempts, row.problems) == ("failed", 2, ["failed: exit code 1: CUDA out of memory"])


def test_running_run_shows_its_last_eval_and_newest_step(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "s", "r", state="running", evals=[(100, 0.5)])
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(train_line(180)) + "\n")  # logged after summary.json was last rewritten
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert (row.state, row.eval_step, row.final[ACC]) == ("running", 100, 0.5)
    assert (row.step, row.wall_time_s) == (180, 90.0)


def test_summary_alone_gives_final_and_best(tmp_path: Path) -> None:
    run_dir = write_run(
        tmp_path / "s",
        "r",
        summary={"final": {ACC: 0.85, "eval/accuracy": 0.97}, "best": {ACC: {"value": 0.86, "step": 5800}}},
    )
    (run_dir / "metrics.jsonl").unlink()
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert row.final == {ACC: 0.85, "eval/accuracy": 0.97} and row.best[ACC] == (0.86, 5800)
    assert row.eval_step is None and row.problems == []


def test_wrong_types_in_summary_are_problems(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "r", summary={"num_params": "7M", "gpu_hours": True})
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert row.num_params is None and row.gpu_hours is None
    assert row.problems == [
        "summary.json: 'num_params' should be int, got '7M'",
        "summary.json: 'gpu_hours' should be a number, got True",
    ]


def test_summary_of_another_run_is_a_problem(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "r", summary={"run_name": "other"})
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert row.problems == ["summary.json names run 'other', but the run is 'r'"]


def test_done_without_any_eval_is_a_problem(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "r", lines=[train_line(100)])
    assert collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0].problems == [
        "finished without any eval in metrics.jsonl or summary.json"
    ]


def test_unknown_metric_is_reported_per_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_run(tmp_path / "s", "a")
    write_run(tmp_path / "s", "b", state="running", lines=[train_line(10)])  # no eval yet: nothing to say
    with caplog.at_level(logging.WARNING):
        result = collect_sweep(sweep_from_folder(tmp_path / "s", metric="eval/exact_acc"))
    assert result.metrics[0] == "eval/exact_acc"
    assert result.row("a").problems == [
        "metric 'eval/exact_acc' is not reported by this run (did you mean 'eval/exact_accuracy'?); it "
        "reports eval/accuracy, eval/exact_accuracy, eval/lm_loss, eval/q_halt_accuracy, eval/steps"
    ]
    assert result.row("b").problems == []
    assert result.warnings == ["no run reports the metric 'eval/exact_acc'"]
    assert "no run reports the metric 'eval/exact_acc'" in caplog.text


def test_deltas_and_distinguishing_overrides_against_the_baseline(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "baseline", evals=[(100, 0.5), (200, 0.85)])
    write_run(tmp_path / "s", "no_ema", evals=[(100, 0.4), (200, 0.775)], overrides=["ema=false"])
    write_run(
        tmp_path / "s", "T2_n2", evals=[(100, 0.3)], overrides=["arch.H_cycles=3", "arch.L_cycles=2"], state="running"
    )
    result = collect_sweep(sweep_from_folder(tmp_path / "s", baseline="baseline"))
    assert [r.name for r in result.rows] == ["baseline", "T2_n2", "no_ema"]  # the baseline first
    assert result.row("baseline").delta[ACC] == 0.0 and result.row("baseline").overrides == ""
    assert result.row("no_ema").delta[ACC] == pytest.approx(-0.075)
    assert result.row("no_ema").overrides == "train.ema=false"
    assert result.row("T2_n2").delta[ACC] == pytest.approx(0.3 - 0.85)  # a running run: its last eval
    assert result.row("T2_n2").overrides == "arch.H_cycles=3 arch.L_cycles=2"
    assert result.row("T2_n2").depth == 3 * 3 * 2


def test_overrides_without_a_baseline_show_what_varies(tmp_path: Path) -> None:
    for n in (1, 2, 4):
        write_run(tmp_path / "grid", f"L{n}", overrides=[f"arch.L_layers={n}", "train.device=cpu"])
    result = collect_sweep(sweep_from_folder(tmp_path / "grid"))
    assert [r.overrides for r in result.rows] == ["arch.L_layers=1", "arch.L_layers=2", "arch.L_layers=4"]
    assert all(not r.delta for r in result.rows)


def test_baseline_without_eval_gives_no_deltas_and_a_warning(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "base", state="running", lines=[train_line(10)])
    write_run(tmp_path / "s", "other")
    result = collect_sweep(sweep_from_folder(tmp_path / "s", baseline="base"))
    assert result.row("other").delta == {}
    assert result.warnings == ["baseline 'base' has no eval yet: no deltas"]


def test_expected_beside_measured(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "baseline", evals=[(100, 0.853)])
    write_run(tmp_path / "s", "no_ema", evals=[(100, 0.80)])
    runs = [
        RunEntry("baseline", tmp_path / "s" / "baseline", expected={ACC: 0.853}),
        RunEntry("no_ema", tmp_path / "s" / "no_ema", expected_delta={ACC: -0.075}),
        RunEntry("later", tmp_path / "s" / "later", expected_delta={"eval/ARC/pass@2": 0.1}),
    ]
    result = collect_sweep(SweepEntry("s", tmp_path, runs, baseline="baseline"))
    assert result.row("baseline").expected == {ACC: 0.853}
    assert result.row("no_ema").expected_delta == {ACC: -0.075}
    assert result.row("no_ema").delta[ACC] == pytest.approx(-0.053)
    later = result.row("later")
    assert (later.state, later.problems) == ("not started", [])  # a partial sweep: not a problem
    assert "eval/ARC/pass@2" in result.metrics  # the expectation gets its column even before a measurement


def test_expected_metric_the_run_does_not_report(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "r")
    runs = [RunEntry("r", tmp_path / "s" / "r", expected={"eval/ARC/pass@2": 0.4})]
    row = collect_sweep(SweepEntry("s", tmp_path, runs)).rows[0]
    assert len(row.problems) == 1 and row.problems[0].startswith("metric 'eval/ARC/pass@2' is not reported")


def test_unknown_baseline_names_the_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "s", "a")
    write_run(tmp_path / "s", "b")
    with pytest.raises(CollectError, match="baseline 'base' is not a run of sweep 's'; runs: a, b"):
        sweep_from_folder(tmp_path / "s", baseline="base")


def test_inputs_that_are_not_sweeps(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes").mkdir()
    with pytest.raises(CollectError, match="no run directories in it"):
        collect([tmp_path / "empty"])
    write_run(tmp_path / "runs" / "sweep_a", "r")
    with pytest.raises(CollectError, match=r"it holds sweep folders \(sweep_a\): name those instead"):
        collect([tmp_path / "runs"])
    with pytest.raises(CollectError, match="does not exist"):
        collect([tmp_path / "nothing"])
    with pytest.raises(CollectError, match="sweep spec .* does not exist"):
        collect([tmp_path / "nothing.yaml"])
    write_run(tmp_path / "a" / "s", "r")
    write_run(tmp_path / "b" / "s", "r")
    with pytest.raises(CollectError, match="two inputs are both sweep 's'"):
        collect([tmp_path / "a" / "s", tmp_path / "b" / "s"])


def test_one_run_directory_is_a_sweep_of_one(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "quickstart")
    (run_dir / "checkpoints" / "step-00000200").mkdir(parents=True)
    result = collect([run_dir])[0]
    assert result.name == "quickstart" and [r.name for r in result.rows] == ["quickstart"]


def test_missing_config_yaml(tmp_path: Path) -> None:
    (write_run(tmp_path / "s", "r") / "config.yaml").unlink()
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert (row.depth, row.final[ACC]) == (None, 0.8)
    assert row.problems == ["no config.yaml: depth and overrides unknown"]


def test_damaged_config_yaml(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "s", "r")
    (run_dir / "config.yaml").write_text("arch: [unclosed\n")
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert row.depth is None and row.final[ACC] == 0.8
    assert len(row.problems) == 1 and row.problems[0].startswith("config.yaml cannot be read")
    (run_dir / "config.yaml").write_text("- a\n- b\n")
    row = collect_sweep(sweep_from_folder(tmp_path / "s")).rows[0]
    assert row.problems == ["config.yaml cannot be read: expected a mapping of sections, got list"]


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_fast_yaml_flattening_matches_the_full_loader(name: str) -> None:
    text = to_yaml(load_config(CONFIGS / name))
    full = yaml.load(text, Loader=yaml.BaseLoader)
    flat = {f"{section}.{k}": v for section, values in full.items() for k, v in values.items()}
    assert flat_yaml(text) == flat
    assert config_as_text(load_config(CONFIGS / name)) == flat


def test_yaml_shapes_the_fast_path_hands_over() -> None:
    assert flat_yaml("a: &x {b: 1}\nc: *x\n") == {"a.b": "1", "c.b": "1"}  # aliases
    assert flat_yaml("a:\n  - {b: 1}\n") == {"a": [{"b": "1"}]}  # a list of mappings
    with pytest.raises(yaml.YAMLError):
        flat_yaml("a: 1\n---\nb: 2\n")


def test_encoder_runs_take_train_accuracy_from_the_last_eval_not_the_last_train_line(tmp_path: Path) -> None:
    """The train log line after the last eval says 20% (one interval's halted slots); the eval's figure on
    the training tasks says 95%, in metrics.jsonl and in summary.json's final: the table shows 95%."""
    from trm.hpc.collect import format_table

    encoder = ["arch.encoder_type=standard", "arch.puzzle_emb_len=2"]
    final = {ACC: 0.5, "eval/accuracy_train": 0.95, "eval/collapse_ratio": 3.0}
    lines = [train_line(50, **{"train/accuracy": 0.6}), eval_line(100, 0.5, **final)]
    lines.append(train_line(150, **{"train/accuracy": 0.2}))
    write_run(tmp_path / "s", "enc", lines=lines, overrides=encoder, summary={"final": final})
    # the same run, its metrics.jsonl lost: summary.json alone
    write_run(tmp_path / "s", "enc_summary", lines=[], overrides=encoder, summary={"final": final})
    result = collect([tmp_path / "s"])[0]
    assert result.row("enc").etrm["train_accuracy"] == pytest.approx(0.95)
    assert result.row("enc_summary").etrm["train_accuracy"] == pytest.approx(0.95)
    row = next(line for line in format_table(result).splitlines() if line.startswith("enc "))
    assert "95.0%" in row and "20.0%" not in row
