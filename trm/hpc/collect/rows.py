"""One row per run: state, progress, final and best eval metrics, deltas against the baseline.

result = collect_sweep(resolve_input("runs/maze_ablations", baseline="baseline"))
result.row("no_ema").delta["eval/exact_accuracy"]
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trm.config import RUNTIME_KEYS
from trm.hpc.collect.rundir import RunFiles, is_number, read_run
from trm.hpc.collect.sweep import CollectError, RunEntry, SweepEntry, resolve_input
from trm.rundir import CONFIG, SUMMARY

log = logging.getLogger("trm.hpc.collect")

NOT_STARTED = "not started"
# States before the trainer has written anything (trm.rundir: pending = submitted, not started):
# a missing summary.json is expected there.
_PRE_START_STATES = {"pending", NOT_STARTED}
# Config keys that never distinguish one run's computation from another's.
_IGNORED_KEYS = set(RUNTIME_KEYS) | {"run.name", "run.root", "run.project"}
_METRIC_ORDER = ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss")


@dataclass
class RunResult:
    sweep: str
    name: str
    run_dir: Path
    overrides: str = ""
    num_params: int | None = None
    depth: int | None = None
    state: str = "unknown"
    attempts: int | None = None
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    wall_time_s: float | None = None
    gpu_hours: float | None = None
    updated_at: str | None = None
    eval_step: int | None = None  # the step of the last eval: a running run shows its latest numbers
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, tuple[float, int | None]] = field(default_factory=dict)
    delta: dict[str, float] = field(default_factory=dict)
    expected: dict[str, float] = field(default_factory=dict)
    expected_delta: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    problems: list[str] = field(default_factory=list)
    etrm: dict[str, Any] = field(default_factory=dict)  # encoder runs: encoder, mode, explore, train accuracy


@dataclass
class SweepResult:
    name: str
    source: Path
    metric: str
    baseline: str | None
    rows: list[RunResult]
    metrics: list[str]  # every eval metric any run reports, the sweep's metric first
    warnings: list[str] = field(default_factory=list)

    def row(self, name: str) -> RunResult:
        return next(r for r in self.rows if r.name == name)


def higher_is_better(metric: str) -> bool | None:
    """Direction of 'best': accuracies and pass@K go up, losses down; halting steps have no best."""
    leaf = metric.rsplit("/", 1)[-1]
    if "accuracy" in leaf or leaf.startswith("pass@"):
        return True
    if "loss" in leaf:
        return False
    return None


def _typed(source: dict[str, Any] | None, key: str, kind: type, where: str, problems: list[str]) -> Any:
    if not source or source.get(key) is None:
        return None
    value = source[key]
    ok = is_number(value) if kind is float else isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        problems.append(f"{where}: '{key}' should be {'a number' if kind is float else kind.__name__}, got {value!r}")
        return None
    return float(value) if kind is float else value


def _depth(config: dict[str, Any] | None, problems: list[str]) -> int | None:
    if config is None:
        return None
    values = [config.get(f"arch.{k}") for k in ("H_cycles", "L_cycles", "L_layers")]
    try:
        h_cycles, l_cycles, l_layers = (int(str(v)) for v in values)
    except ValueError:
        problems.append(
            "config.yaml: arch.H_cycles, arch.L_cycles and arch.L_layers must be integers, got "
            f"{', '.join(map(str, values))}"
        )
        return None
    return h_cycles * (l_cycles + 1) * l_layers  # layers applied per supervision step (the paper's count)


def _build_row(sweep: str, entry: RunEntry, files: RunFiles) -> tuple[RunResult, dict[str, Any] | None]:
    row = RunResult(
        sweep=sweep,
        name=entry.name,
        run_dir=entry.run_dir,
        problems=list(files.problems),
        expected=dict(entry.expected),
        expected_delta=dict(entry.expected_delta),
    )
    config = files.config if files.config is not None else entry.config
    row.depth = _depth(config, row.problems)
    if config is None and (files.summary or files.evals or files.last_train) and not (row.run_dir / CONFIG).exists():
        row.problems.append("no config.yaml: depth and overrides unknown")
    _set_state(row, files)
    _check_heartbeat(row, files)
    _set_progress(row, files)
    _set_eval_metrics(row, files)
    _set_etrm(row, config, files)
    return row, config


def _set_etrm(row: RunResult, config: dict[str, Any] | None, files: RunFiles) -> None:
    """The settings the ETRM studies vary, and the training tasks' accuracy of the run's last eval (the
    trainer's `eval/accuracy_train`: EMA weights, every ACT step), for runs with a demo encoder. Not the
    last train log line: that averages one interval's halted slots under moving weights, and is absent
    or stale for a run whose last line came before its end."""
    if not config or str(config.get("arch.encoder_type", "none")) == "none":
        return
    row.etrm = {
        "encoder": str(config.get("arch.encoder_type")),
        "mode": str(config.get("train.act_mode", "original")),
        "explore": str(config.get("arch.halt_exploration_prob", "")),
        "train_accuracy": row.final.get("eval/accuracy_train"),
    }
    if row.etrm["mode"] == "online":
        row.etrm["explore"] = f"{config.get('arch.num_act_steps')} steps"


def _set_state(row: RunResult, files: RunFiles) -> None:
    summary, status = files.summary, files.status
    status_state = _typed(status, "state", str, "status.json", row.problems)
    summary_state = _typed(summary, "state", str, "summary.json", row.problems)
    if not files.exists:
        row.state = NOT_STARTED
    else:
        row.state = status_state or summary_state or "unknown"  # the cluster layer knows more; it wins
    message = _typed(status, "message", str, "status.json", row.problems)
    if row.state in ("failed", "cancelled"):
        # the cluster layer's reason (first line of the error, exit code), and a log that exists
        text = message or f"{row.state} (no reason recorded)"
        text = text if text.startswith(("failed", "cancelled", "timed out", "preempted")) else f"{row.state}: {text}"
        logs = [p for p in (status or {}).get("log_paths") or [] if isinstance(p, str) and Path(p).exists()]
        if "log:" not in text and (logs or (row.run_dir / "train.log").exists()):
            text += f"; log: {logs[-1] if logs else row.run_dir / 'train.log'}"
        row.problems.append(text)
    elif row.state == "requeued" and message:
        row.problems.append(message)  # "preempted at step N ...; requeued" or "timed out ..."
    elif (
        files.exists and summary is None and not (row.run_dir / SUMMARY).exists() and row.state not in _PRE_START_STATES
    ):
        row.problems.append("no summary.json yet (the trainer writes it at its first log interval)")
    if files.torn_tail and row.state != "running":
        row.problems.append("metrics.jsonl: the last line is incomplete (a torn write) and was skipped")
    if summary and isinstance(summary.get("run_name"), str) and summary["run_name"] not in (row.name, ""):
        row.problems.append(f"summary.json names run '{summary['run_name']}', but the run is '{row.name}'")
    row.attempts = _typed(status, "attempts", int, "status.json", row.problems)
    if row.attempts is None:
        row.attempts = _typed(summary, "attempts", int, "summary.json", row.problems)
    row.updated_at = _typed(status, "updated_at", str, "status.json", row.problems) or _typed(
        summary, "updated_at", str, "summary.json", row.problems
    )


def _check_heartbeat(row: RunResult, files: RunFiles) -> None:
    """A run that says `running` whose trainer is gone (no heartbeat: killed, node lost, run directory
    unwritable) is dead: failed when only the trainer spoke, flagged when the cluster layer did; and a
    trainer's own reason for failing (e.g. a NaN loss) is shown."""
    from trm.train.runlock import dead_run_message

    if row.state == "running" and (dead := dead_run_message(row.run_dir)):
        row.state = "failed" if not (files.status or {}).get("state") else row.state
        row.problems.append(dead)
    summary = files.summary or {}
    if row.state == "failed" and summary.get("state") == "failed" and isinstance(summary.get("message"), str):
        row.problems.append(f"trainer: {summary['message']}")


def _set_progress(row: RunResult, files: RunFiles) -> None:
    summary = files.summary
    row.num_params = _typed(summary, "num_params", int, "summary.json", row.problems)
    row.step = _typed(summary, "step", int, "summary.json", row.problems)
    row.total_steps = _typed(summary, "total_steps", int, "summary.json", row.problems)
    row.epoch = _typed(summary, "epoch", float, "summary.json", row.problems)
    row.wall_time_s = _typed(summary, "wall_time_s", float, "summary.json", row.problems)
    row.gpu_hours = _typed(summary, "gpu_hours", float, "summary.json", row.problems)
    # metrics.jsonl may be ahead of summary.json (or alone, when summary.json is torn): take the newest.
    newest = max(files.evals + ([files.last_train] if files.last_train else []), key=lambda o: o["step"], default=None)
    if newest is not None and (row.step is None or newest["step"] > row.step):
        row.step = newest["step"]
        if is_number(newest.get("epoch")):
            row.epoch = float(newest["epoch"])
        if is_number(newest.get("time_s")):
            row.wall_time_s = float(newest["time_s"])


def _set_eval_metrics(row: RunResult, files: RunFiles) -> None:
    summary = files.summary
    for obj in files.evals:
        for key, value in obj.items():
            if key.startswith("eval/"):
                row.curves.setdefault(key, []).append((obj["step"], float(value)))
    if files.evals:
        row.eval_step = files.evals[-1]["step"]
        row.final = {k: points[-1][1] for k, points in row.curves.items()}
    elif summary and isinstance(summary.get("final"), dict):
        row.final = {k: float(v) for k, v in summary["final"].items() if is_number(v)}
    for key, points in row.curves.items():
        up = higher_is_better(key)
        finite = [(s, v) for s, v in points if not math.isnan(v)]
        if up is not None and finite:
            # Ties go to the earliest step, as the trainer's summary.best reports them.
            step, value = max(finite, key=lambda p: (p[1] if up else -p[1], -p[0]))
            row.best[key] = (value, step)
    if summary and isinstance(summary.get("best"), dict):
        for key, item in summary["best"].items():
            if key not in row.best and isinstance(item, dict) and is_number(item.get("value")):
                step = item.get("step")
                row.best[key] = (float(item["value"]), step if isinstance(step, int) else None)


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(_format_value, value)) + "]"
    return str(value)


def _hashable(value: Any) -> Any:
    return tuple(map(_hashable, value)) if isinstance(value, list) else value


def distinguishing_overrides(configs: dict[str, dict[str, Any] | None], baseline: str | None) -> dict[str, str]:
    """Per run, `key=value` for the config keys that differ (from the baseline, or anywhere in the sweep)."""
    present = {name: c for name, c in configs.items() if c is not None}
    keys: set[str] = set()
    for config in present.values():
        keys.update(config)

    def spread(key: str) -> int:
        return len({_hashable(c.get(key)) for c in present.values()})

    varying = sorted(k for k in keys - _IGNORED_KEYS if spread(k) > 1)
    reference = present.get(baseline) if baseline else None
    out: dict[str, str] = {}
    for name, config in configs.items():
        if config is None:
            out[name] = ""
            continue
        chosen = [k for k in varying if reference is None or config.get(k) != reference.get(k)]
        out[name] = " ".join(f"{k}={_format_value(config.get(k))}" for k in chosen)
    return out


def _metric_sort_key(metric: str) -> tuple[int, int, str]:
    parts = metric.split("/")
    if len(parts) == 2 and parts[1] in _METRIC_ORDER:
        return (0, _METRIC_ORDER.index(parts[1]), metric)
    return (1 if len(parts) == 2 else 2, 0, metric)


def collect_sweep(sweep: SweepEntry) -> SweepResult:
    """Read every run of `sweep` and build its rows: metrics, deltas against the baseline, expectations."""
    rows: list[RunResult] = []
    configs: dict[str, dict[str, Any] | None] = {}
    for entry in sweep.runs:
        row, config = _build_row(sweep.name, entry, read_run(entry.run_dir))
        rows.append(row)
        configs[entry.name] = config
    for row, text in zip(rows, distinguishing_overrides(configs, sweep.baseline).values()):
        row.overrides = text
    reported: set[str] = set()
    for row in rows:
        reported.update(row.final)
    expected_names = {k for r in rows for k in (*r.expected, *r.expected_delta)}
    metrics = sorted(reported | expected_names | {sweep.metric}, key=_metric_sort_key)
    metrics.remove(sweep.metric)
    metrics.insert(0, sweep.metric)
    result = SweepResult(
        name=sweep.name,
        source=sweep.source,
        metric=sweep.metric,
        baseline=sweep.baseline,
        rows=rows,
        metrics=metrics,
        warnings=list(sweep.warnings),
    )

    for row in rows:
        if not row.final:
            if row.state == "done":
                row.problems.append("finished without any eval in metrics.jsonl or summary.json")
            continue
        for name in dict.fromkeys([sweep.metric, *row.expected, *row.expected_delta]):
            if name not in row.final:
                close = difflib.get_close_matches(name, list(row.final), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                row.problems.append(
                    f"metric '{name}' is not reported by this run{hint}; it reports {', '.join(sorted(row.final))}"
                )
    if sweep.metric not in reported:
        result.warnings.append(f"no run reports the metric '{sweep.metric}'")

    if sweep.baseline is not None:
        base = result.row(sweep.baseline)
        if not base.final:
            result.warnings.append(f"baseline '{base.name}' has no eval yet: no deltas")
        for row in rows:
            row.delta = {k: row.final[k] - base.final[k] for k in row.final if k in base.final}
    for row in rows:
        for problem in row.problems:
            log.warning("%s/%s: %s", sweep.name, row.name, problem)
    for warning in result.warnings:
        log.warning("%s: %s", sweep.name, warning)
    return result


def collect(
    inputs: Iterable[Path | str],
    runs_root: Path | str | None = None,
    baseline: str | None = None,
    metric: str | None = None,
) -> list[SweepResult]:
    sweeps = [resolve_input(p, runs_root, baseline, metric) for p in inputs]
    seen: dict[str, Path] = {}
    for sweep in sweeps:
        if sweep.name in seen:
            raise CollectError(
                f"two inputs are both sweep '{sweep.name}' ({seen[sweep.name]} and "
                f"{sweep.source}); their results would overwrite each other: collect them "
                f"one at a time"
            )
        seen[sweep.name] = sweep.source
    return [collect_sweep(s) for s in sweeps]
