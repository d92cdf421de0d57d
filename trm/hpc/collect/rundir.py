"""Reading one run directory tolerantly: config.yaml, summary.json, status.json, metrics.jsonl.

    files = read_run(Path("runs/maze_ablations/no_ema"))
    files.summary, files.evals[-1], files.problems

Nothing here raises on a damaged run directory: each defect (a torn summary.json, a metrics line
that is not JSON, ...) becomes a sentence in `RunFiles.problems`, and what could be read is kept.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trm.config import Config, to_yaml
from trm.rundir import CONFIG, METRICS, RUN_FILES, STATUS, SUMMARY, looks_like_run_dir

__all__ = ["RUN_FILES", "RunFiles", "config_as_text", "flat_yaml", "is_number", "looks_like_run_dir", "read_run"]

# config.yaml values are read as the text the trainer wrote (`true`, `0.002`, `[a, b]` items): the
# collector compares and prints them, it does not compute with them, and libyaml's base loader is
# about 10x faster than the typed pure-Python one (bench/collect.py reads 1000 of them).
_YAML_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


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


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
            what = "empty" if not text.strip() else f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno})"
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

    Built from libyaml's event stream: about 2x faster than `yaml.load` + flatten with the same C loader,
    which builds the tree in Python first, and 2.7x faster than CSafeLoader (1000 config.yaml: 0.34 s
    against 0.66 s and 0.90 s CPU; bench/collect.py: 1.3 s against 2.0 s CPU for 1000 runs, where the
    target is 2 s). Other shapes go through `yaml.load`.
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
        files.problems.append(
            f"metrics.jsonl: {len(bad)} line(s) are not a JSON object with 'event' and "
            f"an integer 'step' (line {shown}); skipped"
        )
    files.evals = [evals[step] for step in sorted(evals)]
    files.last_train = last_train
    for obj in files.evals:
        for key, value in list(obj.items()):
            if value is None and key.startswith("eval/"):
                obj[key] = math.nan  # the trainer writes NaN and inf as null (a diverged run, not a defect)
            elif key.startswith("eval/") and not is_number(value):
                files.problems.append(
                    f"metrics.jsonl: eval at step {obj['step']}: {key} = {value!r} is not a number; skipped"
                )
                del obj[key]


def read_run(run_dir: Path) -> RunFiles:
    """Read config.yaml, summary.json, status.json and metrics.jsonl of one run directory."""
    run_dir = Path(run_dir)
    files = RunFiles(run_dir=run_dir, exists=run_dir.is_dir())
    if not files.exists:
        return files
    files.config = _read_config(run_dir / CONFIG, files.problems)
    files.summary = _read_json(run_dir / SUMMARY, files.problems)
    files.status = _read_json(run_dir / STATUS, files.problems)
    _read_metrics(run_dir / METRICS, files)
    return files
