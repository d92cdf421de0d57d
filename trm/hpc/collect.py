"""Collect a sweep's run directories into one table: results/<sweep>.csv, a terminal table, Markdown, plots.

    python tools/collect.py jobs/maze_ablations.yaml             # a sweep spec: runs, baseline, expectations
    python tools/collect.py runs/maze_ablations/ --baseline baseline
    python tools/collect.py jobs/a.yaml runs/b/ --markdown --append results/all.csv

Reads only what the trainer and the cluster layer write (docs/run-directory.md): config.yaml,
summary.json, metrics.jsonl and status.json. A damaged run directory never stops the collection:
each defect becomes a line in that run's `problems` column and a warning; the other rows still come out.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trm.config import RUNTIME_KEYS, Config, to_yaml

log = logging.getLogger(__name__)

RUN_FILES = ("config.yaml", "summary.json", "metrics.jsonl", "status.json")
DEFAULT_METRIC = "eval/exact_accuracy"
NOT_STARTED = "not started"
# status.json states before the trainer has written anything: a missing summary.json is expected there.
_PRE_START_STATES = {"pending", "submitted", "queued", NOT_STARTED}
# config.yaml values are read as the text the trainer wrote (`true`, `0.002`, `[a, b]` items): the
# collector compares and prints them, it does not compute with them, and libyaml's base loader is
# about 10x faster than the typed pure-Python one (bench/collect.py reads 1000 of them).
_YAML_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
# Config keys that never distinguish one run's computation from another's.
_IGNORED_KEYS = set(RUNTIME_KEYS) | {"run.name", "run.root", "run.project"}
# Lease of the shared results file's lock; fixed, because every collector of one file must agree on it.
SHARED_LEASE_S = 30.0
_METRIC_ORDER = ("exact_accuracy", "accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss")


class CollectError(ValueError):
    """An input the user must fix (not a run directory, unknown baseline, unreadable shared file)."""


# ----------------------------------------------------------------------------------------------
# Reading one run directory


@dataclass
class RunFiles:
    """What one run directory says, read tolerantly: every defect is a problem, never an exception."""

    run_dir: Path
    exists: bool
    config: dict[str, Any] | None = None  # flattened: {"arch.L_layers": 2, ...}
    summary: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)  # last line per step, by step
    last_train: dict[str, Any] | None = None
    torn_tail: bool = False  # the last metrics line has no newline yet and does not parse
    problems: list[str] = field(default_factory=list)


def config_as_text(config: Config) -> dict[str, Any]:
    """A config tree flattened with its values as config.yaml spells them, comparable with `_read_config`."""
    return _flatten(yaml.load(to_yaml(config), Loader=_YAML_LOADER))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    for attempt in range(2):
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{path.name}: cannot be read ({e})")
            return None
        try:
            data = json.loads(text)
            break
        except json.JSONDecodeError as e:
            if attempt == 0:
                # Writers replace these files atomically, but an NFS client can serve a stale,
                # partial page for a moment; one short retry separates that from a real defect.
                time.sleep(0.05)
                continue
            what = "empty" if not text.strip() else \
                f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno})"
            problems.append(f"{path.name} is {what}: a torn write or a damaged file")
            return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: expected a JSON object, got {type(data).__name__}")
        return None
    return data


class _NotFlat(Exception):
    """A YAML shape the event flattener leaves to the full loader (aliases, lists of mappings, ...)."""


def flat_yaml(text: str) -> dict[str, Any]:
    """`{"arch.L_layers": "2", "data.data_paths": ["data/x"], ...}` from YAML text of nested mappings.

    Built from libyaml's event stream: about 2x faster than `yaml.load` + flatten, which builds the tree
    first (the collector reads one config.yaml per run). Other shapes go through `yaml.load`.
    """
    try:
        return _flat_from_events(text)
    except _NotFlat:
        raw = yaml.load(text, Loader=_YAML_LOADER)
        if not isinstance(raw, dict):
            raise yaml.YAMLError(f"expected a mapping of sections, got {type(raw).__name__}") from None
        return _flatten(raw)


def _flat_from_events(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    path: list[str] = []  # the keys leading to the innermost open mapping
    key: list[str | None] = []  # per open mapping: the key waiting for its value
    items: list[str] | None = None  # the open sequence (of scalars)
    documents = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        kind = type(event)
        if kind is yaml.DocumentStartEvent:
            documents += 1
        elif kind is yaml.ScalarEvent:
            if items is not None:
                items.append(event.value)
            elif not key:
                raise _NotFlat
            elif key[-1] is None:
                key[-1] = event.value
            else:
                out[".".join([*path, key[-1]])] = event.value  # type: ignore[list-item]
                key[-1] = None
        elif kind is yaml.MappingStartEvent:
            if items is not None or (key and key[-1] is None):
                raise _NotFlat
            if key:
                path.append(key[-1])  # type: ignore[arg-type]
            elif documents != 1:
                raise _NotFlat  # several documents: the full loader refuses them by name
            key.append(None)
        elif kind is yaml.MappingEndEvent:
            key.pop()
            if key:
                path.pop()
                key[-1] = None
        elif kind is yaml.SequenceStartEvent:
            if items is not None or not key or key[-1] is None:
                raise _NotFlat
            items = []
        elif kind is yaml.SequenceEndEvent:
            out[".".join([*path, key[-1]])] = items  # type: ignore[list-item]
            key[-1], items = None, None
        elif kind is yaml.AliasEvent:
            raise _NotFlat
    if documents != 1:
        raise _NotFlat  # empty, or several documents: the full loader names what is wrong
    return out


def _read_config(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        return flat_yaml(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        problems.append(f"config.yaml cannot be read: {' '.join(str(e).split())}")
        return None


def _parse_metrics_line(line: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj if _is_metrics_obj(obj) else None


def _is_metrics_obj(obj: Any) -> bool:
    # `type(x) is int` also refuses bools
    return type(obj) is dict and type(obj.get("event")) is str and type(obj.get("step")) is int


_BLANK: dict[str, Any] = {}  # an empty line of metrics.jsonl (compared by identity, never filled)


def _read_metrics(path: Path, files: RunFiles) -> None:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return
    except OSError as e:
        files.problems.append(f"metrics.jsonl: cannot be read ({e})")
        return
    body, _, tail = text.rpartition("\n")  # tail: a line the trainer may still be appending
    lines = body.split("\n") if body else []
    parsed: list[Any] = []
    try:
        # One parse of the whole file is much faster than one per line (bench/collect.py); a defect
        # (or a line holding two objects) breaks it or the count, and the per-line parse finds the line.
        parsed = json.loads("[" + ",".join(lines) + "]")
    except json.JSONDecodeError:
        pass
    if len(parsed) != len(lines):
        parsed = [_parse_metrics_line(line) if line.strip() else _BLANK for line in lines]
    if tail.strip():
        obj = _parse_metrics_line(tail)
        files.torn_tail = obj is None
        if obj is not None:
            parsed.append(obj)
    evals: dict[int, dict[str, Any]] = {}
    last_train: dict[str, Any] | None = None
    bad: list[int] = []
    for lineno, obj in enumerate(parsed, 1):
        if obj is _BLANK:
            continue
        if not _is_metrics_obj(obj):
            bad.append(lineno)
        elif obj["event"] == "eval":
            # After a resume the steps since the checkpoint run again: the last line for a step counts.
            evals[obj["step"]] = obj
        elif obj["event"] == "train" and (last_train is None or obj["step"] >= last_train["step"]):
            last_train = obj
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        files.problems.append(f"metrics.jsonl: {len(bad)} line(s) are not a JSON object with 'event' and "
                              f"an integer 'step' (line {shown}); skipped")
    files.evals = [evals[step] for step in sorted(evals)]
    files.last_train = last_train
    for obj in files.evals:
        for key, value in list(obj.items()):
            if value is None and key.startswith("eval/"):
                obj[key] = math.nan  # the trainer writes NaN and inf as null (a diverged run, not a defect)
            elif key.startswith("eval/") and not _is_number(value):
                files.problems.append(f"metrics.jsonl: eval at step {obj['step']}: {key} = {value!r} "
                                      f"is not a number; skipped")
                del obj[key]


def read_run(run_dir: Path) -> RunFiles:
    """Read config.yaml, summary.json, status.json and metrics.jsonl of one run directory."""
    run_dir = Path(run_dir)
    files = RunFiles(run_dir=run_dir, exists=run_dir.is_dir())
    if not files.exists:
        return files
    files.config = _read_config(run_dir / "config.yaml", files.problems)
    files.summary = _read_json(run_dir / "summary.json", files.problems)
    files.status = _read_json(run_dir / "status.json", files.problems)
    _read_metrics(run_dir / "metrics.jsonl", files)
    return files


def looks_like_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


# ----------------------------------------------------------------------------------------------
# What to collect: a sweep is a named list of runs, maybe a baseline, maybe expected results


@dataclass
class RunEntry:
    name: str
    run_dir: Path
    config: dict[str, Any] | None = None  # flattened config from the spec, used while config.yaml is absent
    expected: dict[str, float] = field(default_factory=dict)
    expected_delta: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepEntry:
    name: str
    source: Path
    runs: list[RunEntry]
    baseline: str | None = None
    metric: str = DEFAULT_METRIC
    warnings: list[str] = field(default_factory=list)


def sweep_from_folder(folder: Path, baseline: str | None = None, metric: str | None = None) -> SweepEntry:
    """A folder of run directories (`runs/<sweep>/`), or one run directory on its own."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CollectError(f"{folder}: not a directory (expected a sweep spec .yaml or a folder of run "
                           f"directories)")
    if looks_like_run_dir(folder):
        run_dirs = [folder]
    else:
        run_dirs = sorted(p for p in folder.iterdir() if looks_like_run_dir(p))
    if not run_dirs:
        raise CollectError(f"{folder}: no run directories in it (a run directory holds at least one of "
                           f"{', '.join(RUN_FILES)})")
    runs = [RunEntry(name=p.name, run_dir=p) for p in run_dirs]
    sweep = SweepEntry(name=folder.resolve().name, source=folder, runs=runs, metric=metric or DEFAULT_METRIC)
    _set_baseline(sweep, baseline)
    return sweep


def sweep_from_spec(path: Path, runs_root: Path | str | None = None, baseline: str | None = None,
                    metric: str | None = None) -> SweepEntry:
    """A sweep spec (`jobs/<sweep>.yaml`): its runs in spec order, their run dirs, baseline, expectations."""
    from trm.hpc.spec import load_sweep  # the spec layer imports more than a folder collection needs

    spec = load_sweep(path, runs_root=runs_root)
    runs = [RunEntry(name=r.name, run_dir=Path(r.run_dir), config=config_as_text(r.config),
                     expected=dict(r.expected), expected_delta=dict(r.expected_delta)) for r in spec.runs]
    sweep = SweepEntry(name=spec.name, source=Path(path), runs=runs, baseline=spec.baseline,
                       metric=metric or spec.metric or DEFAULT_METRIC)
    _set_baseline(sweep, baseline or spec.baseline)
    folder = Path(spec.runs_root) / spec.name
    if folder.is_dir():
        known = {r.run_dir.resolve() for r in runs}
        extra = sorted(p.name for p in folder.iterdir() if looks_like_run_dir(p) and p.resolve() not in known)
        if extra:
            sweep.warnings.append(f"{folder} holds run directories the spec does not name (not collected): "
                                  f"{', '.join(extra)}")
    return sweep


def _set_baseline(sweep: SweepEntry, baseline: str | None) -> None:
    if baseline is None:
        sweep.baseline = None
        return
    names = [r.name for r in sweep.runs]
    if baseline not in names:
        raise CollectError(f"{sweep.source}: baseline '{baseline}' is not a run of sweep '{sweep.name}'; "
                           f"runs: {', '.join(names)}")
    sweep.baseline = baseline
    sweep.runs.sort(key=lambda r: r.name != baseline)  # stable: the baseline first, the rest as they were


def resolve_input(path: Path | str, runs_root: Path | str | None = None, baseline: str | None = None,
                  metric: str | None = None) -> SweepEntry:
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise CollectError(f"sweep spec '{path}' does not exist")
        return sweep_from_spec(path, runs_root, baseline, metric)
    if not path.exists():
        raise CollectError(f"'{path}' does not exist (expected a sweep spec .yaml or a folder of run "
                           f"directories)")
    return sweep_from_folder(path, baseline, metric)


# ----------------------------------------------------------------------------------------------
# One row per run


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    ok = _is_number(value) if kind is float else isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        problems.append(f"{where}: '{key}' should be {'a number' if kind is float else kind.__name__}, "
                        f"got {value!r}")
        return None
    return float(value) if kind is float else value


def _depth(config: dict[str, Any] | None, problems: list[str]) -> int | None:
    if config is None:
        return None
    values = [config.get(f"arch.{k}") for k in ("H_cycles", "L_cycles", "L_layers")]
    try:
        h_cycles, l_cycles, l_layers = (int(str(v)) for v in values)
    except ValueError:
        problems.append("config.yaml: arch.H_cycles, arch.L_cycles and arch.L_layers must be integers, got "
                        f"{', '.join(map(str, values))}")
        return None
    return h_cycles * (l_cycles + 1) * l_layers  # layers applied per supervision step (the paper's count)


def _build_row(sweep: str, entry: RunEntry, files: RunFiles) -> tuple[RunResult, dict[str, Any] | None]:
    row = RunResult(sweep=sweep, name=entry.name, run_dir=entry.run_dir, problems=list(files.problems))
    summary, status = files.summary, files.status
    config = files.config if files.config is not None else entry.config
    row.depth = _depth(config, row.problems)
    if config is None and (summary or files.evals or files.last_train) and \
            not (row.run_dir / "config.yaml").exists():
        row.problems.append("no config.yaml: depth and overrides unknown")

    status_state = _typed(status, "state", str, "status.json", row.problems)
    summary_state = _typed(summary, "state", str, "summary.json", row.problems)
    if not files.exists:
        row.state = NOT_STARTED
    else:
        row.state = status_state or summary_state or "unknown"  # the cluster layer knows more; it wins
    if files.exists and summary is None and not (row.run_dir / "summary.json").exists() \
            and row.state not in _PRE_START_STATES:
        row.problems.append("no summary.json yet (the trainer writes it at its first log interval)")
    if files.torn_tail and row.state != "running":
        row.problems.append("metrics.jsonl: the last line is incomplete (a torn write) and was skipped")
    if summary and isinstance(summary.get("run_name"), str) and summary["run_name"] not in (entry.name, ""):
        row.problems.append(f"summary.json names run '{summary['run_name']}', but the run is '{entry.name}'")

    row.attempts = _typed(status, "attempts", int, "status.json", row.problems)
    if row.attempts is None:
        row.attempts = _typed(summary, "attempts", int, "summary.json", row.problems)
    row.num_params = _typed(summary, "num_params", int, "summary.json", row.problems)
    row.step = _typed(summary, "step", int, "summary.json", row.problems)
    row.total_steps = _typed(summary, "total_steps", int, "summary.json", row.problems)
    row.epoch = _typed(summary, "epoch", float, "summary.json", row.problems)
    row.wall_time_s = _typed(summary, "wall_time_s", float, "summary.json", row.problems)
    row.gpu_hours = _typed(summary, "gpu_hours", float, "summary.json", row.problems)
    row.updated_at = _typed(status, "updated_at", str, "status.json", row.problems) or \
        _typed(summary, "updated_at", str, "summary.json", row.problems)

    # metrics.jsonl may be ahead of summary.json (or alone, when summary.json is torn): take the newest.
    newest = max(files.evals + ([files.last_train] if files.last_train else []), key=lambda o: o["step"],
                 default=None)
    if newest is not None and (row.step is None or newest["step"] > row.step):
        row.step = newest["step"]
        if _is_number(newest.get("epoch")):
            row.epoch = float(newest["epoch"])
        if _is_number(newest.get("time_s")):
            row.wall_time_s = float(newest["time_s"])

    for obj in files.evals:
        for key, value in obj.items():
            if key.startswith("eval/"):
                row.curves.setdefault(key, []).append((obj["step"], float(value)))
    if files.evals:
        row.eval_step = files.evals[-1]["step"]
        row.final = {k: points[-1][1] for k, points in row.curves.items()}
    elif summary and isinstance(summary.get("final"), dict):
        row.final = {k: float(v) for k, v in summary["final"].items() if _is_number(v)}
    for key, points in row.curves.items():
        up = higher_is_better(key)
        finite = [(s, v) for s, v in points if not math.isnan(v)]
        if up is not None and finite:
            # Ties go to the earliest step, as the trainer's summary.best reports them.
            step, value = max(finite, key=lambda p: (p[1] if up else -p[1], -p[0]))
            row.best[key] = (value, step)
    if summary and isinstance(summary.get("best"), dict):
        for key, item in summary["best"].items():
            if key not in row.best and isinstance(item, dict) and _is_number(item.get("value")):
                step = item.get("step")
                row.best[key] = (float(item["value"]), step if isinstance(step, int) else None)
    row.expected, row.expected_delta = dict(entry.expected), dict(entry.expected_delta)
    return row, config


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(_format_value, value)) + "]"
    return str(value)


def _hashable(value: Any) -> Any:
    return tuple(map(_hashable, value)) if isinstance(value, list) else value


def distinguishing_overrides(configs: dict[str, dict[str, Any] | None],
                             baseline: str | None) -> dict[str, str]:
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
    result = SweepResult(name=sweep.name, source=sweep.source, metric=sweep.metric, baseline=sweep.baseline,
                         rows=rows, metrics=metrics, warnings=list(sweep.warnings))

    for row in rows:
        if not row.final:
            if row.state == "done":
                row.problems.append("finished without any eval in metrics.jsonl or summary.json")
            continue
        for name in dict.fromkeys([sweep.metric, *row.expected, *row.expected_delta]):
            if name not in row.final:
                close = difflib.get_close_matches(name, list(row.final), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                row.problems.append(f"metric '{name}' is not reported by this run{hint}; it reports "
                                    f"{', '.join(sorted(row.final))}")
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


def collect(inputs: Iterable[Path | str], runs_root: Path | str | None = None, baseline: str | None = None,
            metric: str | None = None) -> list[SweepResult]:
    sweeps = [resolve_input(p, runs_root, baseline, metric) for p in inputs]
    seen: dict[str, Path] = {}
    for sweep in sweeps:
        if sweep.name in seen:
            raise CollectError(f"two inputs are both sweep '{sweep.name}' ({seen[sweep.name]} and "
                               f"{sweep.source}); their results would overwrite each other: collect them "
                               f"one at a time")
        seen[sweep.name] = sweep.source
    return [collect_sweep(s) for s in sweeps]


# ----------------------------------------------------------------------------------------------
# Output: CSV, tables, the shared results file


FIXED_COLUMNS = ("sweep", "name", "overrides", "num_params", "depth", "state", "attempts", "step",
                 "total_steps", "epoch", "wall_time_s", "gpu_hours", "eval_step", "updated_at")


def columns(result: SweepResult) -> list[str]:
    cols = list(FIXED_COLUMNS)
    has_expected = {k for r in result.rows for k in r.expected}
    has_expected_delta = {k for r in result.rows for k in r.expected_delta}
    has_best = {k for r in result.rows for k in r.best}
    for metric in result.metrics:
        cols.append(f"{metric}:final")
        if higher_is_better(metric) is not None or metric in has_best:
            cols += [f"{metric}:best", f"{metric}:best_step"]
        if result.baseline is not None:
            cols.append(f"{metric}:delta")
        if metric in has_expected:
            cols.append(f"{metric}:expected")
        if metric in has_expected_delta:
            cols.append(f"{metric}:expected_delta")
    return cols + ["problems", "run_dir"]


def row_values(row: RunResult) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(row, name) for name in FIXED_COLUMNS}
    values["run_dir"] = str(row.run_dir.resolve())
    values["problems"] = "; ".join(row.problems)
    for metric, value in row.final.items():
        values[f"{metric}:final"] = value
    for metric, (value, step) in row.best.items():
        values[f"{metric}:best"], values[f"{metric}:best_step"] = value, step
    for metric, value in row.delta.items():
        values[f"{metric}:delta"] = value
    for metric, value in row.expected.items():
        values[f"{metric}:expected"] = value
    for metric, value in row.expected_delta.items():
        values[f"{metric}:expected_delta"] = value
    return values


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_text(header: list[str], records: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        writer.writerow([_csv_cell(record.get(col)) for col in header])
    return out.getvalue()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary name in the same folder, fsync, rename: a reader sees the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv(result: SweepResult, path: Path) -> None:
    atomic_write(path, csv_text(columns(result), (row_values(r) for r in result.rows)))


def _fmt_metric(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "nan"
    if higher_is_better(metric):  # accuracies and pass@K as percent, deltas in percentage points
        return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}%"
    return f"{value:+.3g}" if signed else f"{value:.3g}"


def _fmt_count(value: int | None) -> str:
    if value is None:
        return ""
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def table_rows(result: SweepResult) -> tuple[list[str], list[list[str]]]:
    """The paper-style table of a sweep: its metric's final, best, delta and expectations per run."""
    m = result.metric
    header = ["name", "overrides", "params", "depth", "state", "att", "step", "epoch", "wall h", "GPU-h",
              f"{m} final", "best", "@step"]
    if result.baseline is not None:
        header.append("Δ")
    show_expected = any(m in r.expected for r in result.rows)
    show_expected_delta = any(m in r.expected_delta for r in result.rows)
    header += ["expected"] * show_expected + ["exp Δ"] * show_expected_delta + ["problems"]
    body = []
    for r in result.rows:
        best, best_step = r.best.get(m, (None, None))
        cells = [r.name + (" (baseline)" if r.name == result.baseline else ""), r.overrides,
                 _fmt_count(r.num_params), _fmt_count(r.depth), r.state, _fmt_count(r.attempts),
                 "" if r.step is None else str(r.step), "" if r.epoch is None else f"{r.epoch:.0f}",
                 "" if r.wall_time_s is None else f"{r.wall_time_s / 3600:.1f}",
                 "" if r.gpu_hours is None else f"{r.gpu_hours:.1f}",
                 _fmt_metric(m, r.final.get(m)), _fmt_metric(m, best),
                 "" if best_step is None else str(best_step)]
        if result.baseline is not None:
            cells.append(_fmt_metric(m, r.delta.get(m), signed=True))
        if show_expected:
            cells.append(_fmt_metric(m, r.expected.get(m)))
        if show_expected_delta:
            cells.append(_fmt_metric(m, r.expected_delta.get(m), signed=True))
        cells.append("; ".join(r.problems))
        body.append(cells)
    return header, body


def format_table(result: SweepResult, max_problem_chars: int = 60) -> str:
    header, body = table_rows(result)
    body = [cells[:-1] + [_clip(cells[-1], max_problem_chars)] for cells in body]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(header)]
    left = {"name", "overrides", "state", "problems"}

    def line(cells: list[str]) -> str:
        padded = (c.ljust(w) if h in left else c.rjust(w) for h, c, w in zip(header, cells, widths))
        return "  ".join(padded).rstrip()

    title = f"{result.name}  ({result.source}; metric {result.metric}"
    title += f"; baseline {result.baseline})" if result.baseline else ")"
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, body)])


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_markdown(result: SweepResult) -> str:
    header, body = table_rows(result)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if h in ("name", "overrides", "state", "problems") else "---:" for h in header]
    title = f"### {result.name}\n\nMetric `{result.metric}`" + \
        (f", deltas against `{result.baseline}` in percentage points." if result.baseline else ".")
    return "\n".join([title, "", line(header), line(align), *map(line, body)]) + "\n"


def append_shared(path: Path, results: list[SweepResult], timeout_s: float = 60.0,
                  lease_s: float = SHARED_LEASE_S) -> tuple[int, int]:
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
            atomic_write(path, csv_text(header, rows))
    except Timeout:
        raise CollectError(f"{path}: could not take the lock {path}.lock within {timeout_s:g} s: another "
                           f"collector holds it (a lock its holder stopped refreshing expires after "
                           f"{lease_s:g} s); try again, or raise --lock-timeout") from None
    return added, replaced


def _read_shared(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    if not path.exists():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        if "run_dir" not in header:
            raise CollectError(f"{path}: has no 'run_dir' column, so it was not written by "
                               f"`tools/collect.py --append`; refusing to rewrite it (choose another file)")
        rows = []
        for row in reader:
            if None in row:
                raise CollectError(f"{path}: line {reader.line_num} has more fields than the header; "
                                   f"refusing to rewrite a damaged results file (fix or move it)")
            rows.append(row)
    return header, rows


# ----------------------------------------------------------------------------------------------
# wandb: an optional extra for people who want the dashboard; nothing above depends on it


def wandb_offline_dirs(run_dir: Path) -> list[Path]:
    """A run's offline wandb segments, oldest first (`offline-run-<YYYYMMDD_HHMMSS>-<id>`, one a start)."""
    found = [*Path(run_dir).glob("wandb/offline-run-*"), *Path(run_dir).glob("offline-run-*")]
    return sorted((p for p in found if p.is_dir()), key=lambda p: p.name)


def sync_wandb(results: list[SweepResult], executable: str | None = None,
               timeout_s: float = 900.0) -> tuple[int, list[str]]:
    """`wandb sync` every run's offline segments; returns (runs synced, errors). Never raises for wandb."""
    exe = executable or shutil.which("wandb")
    if exe is None:
        return 0, ["--wandb: the `wandb` command is not installed (pip install 'trm[wandb]'); "
                   "the CSV and plots do not need it"]
    synced, errors = 0, []
    for result in results:
        for row in result.rows:
            dirs = wandb_offline_dirs(row.run_dir)
            if not dirs:
                continue
            # All segments of a resumed run in one call: wandb uploads segments of one run id in start order.
            try:
                proc = subprocess.run([exe, "sync", *map(str, dirs)], capture_output=True, text=True,
                                      timeout=timeout_s)
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(f"{result.name}/{row.name}: wandb sync did not run: {e}")
                continue
            if proc.returncode != 0:
                tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
                errors.append(f"{result.name}/{row.name}: wandb sync exited with {proc.returncode}: "
                              f"{tail[0]}")
            else:
                synced += 1
    return synced, errors


# ----------------------------------------------------------------------------------------------
# Command line (tools/collect.py)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/collect.py",
        description="Collect sweeps into results/<sweep>.csv, a printed table, Markdown and PNG plots.")
    p.add_argument("inputs", nargs="+", metavar="SWEEP",
                   help="a sweep spec (jobs/X.yaml) or a folder of run directories (runs/X/); several ok")
    p.add_argument("--runs-root", help="where a spec's run directories live (default: its profile's "
                                       "runs_root, else runs)")
    p.add_argument("--baseline", help="the run deltas are measured against (default: the spec's baseline)")
    p.add_argument("--metric", help=f"the metric of the table and plots (default: the spec's, else "
                                    f"{DEFAULT_METRIC})")
    p.add_argument("--out", default="results", type=Path, help="output folder (default: results)")
    p.add_argument("--markdown", action="store_true", help="also write results/<sweep>.md")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--append", type=Path, metavar="FILE",
                   help="also merge the rows into FILE, a CSV shared by several sweeps or users (locked)")
    p.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait for FILE's lock")
    p.add_argument("--wandb", action="store_true", help="also `wandb sync` the runs' offline wandb folders")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from trm.config import ConfigError

    try:
        results = collect(args.inputs, args.runs_root, args.baseline, args.metric)
        for result in results:
            written = [args.out / f"{result.name}.csv"]
            write_csv(result, written[0])
            if args.markdown:
                written.append(args.out / f"{result.name}.md")
                atomic_write(written[-1], format_markdown(result))
            if not args.no_plots:
                # matplotlib takes about a second to import: only when plotting
                from trm.hpc.plots import plot_sweep

                written += plot_sweep(result, args.out)
            if not args.quiet:
                print(format_table(result), end="\n\n")
            print(f"{result.name}: {len(result.rows)} runs -> {', '.join(map(str, written))}")
        if args.append is not None:
            added, replaced = append_shared(args.append, results, timeout_s=args.lock_timeout)
            print(f"{args.append}: {added} rows added, {replaced} rows of the same runs replaced")
    except (CollectError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.wandb:
        synced, errors = sync_wandb(results)
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        none_found = "" if synced or errors else " (no offline wandb folders found)"
        print(f"wandb: {synced} runs synced{none_found}")
        if errors:
            return 1
    return 0
