"""Sweep specs (`jobs/*.yaml`): a base config, overrides, runs and/or a grid, resources, a profile.

    sweep = load_sweep("jobs/maze_ablations.yaml")           # every run's config validated here
    for run in sweep.runs:
        print(run.name, run.run_dir, run.overrides)

The format:

    name: maze_ablations              # sweep name; run dirs are <runs_root>/<name>/<run>
    config: trm/configs/maze.yaml     # base config, relative to the repo root (or absolute)
    overrides: {epochs: 60000}        # applied to every run; dotted keys or reference aliases
    profile: env/slurm-generic.yaml   # cluster profile (or "local")
    resources: {nodes: 1, gpus_per_node: 4, cpus_per_task: 8, mem_gb: 64, time: "24:00:00"}
    baseline: baseline                # the run the collector measures deltas against (optional)
    metric: eval/exact_accuracy       # headline metric (optional, this default)
    runs:                             # explicit runs...
      - name: no_ema
        overrides: {ema: false}
        expected: {eval/exact_accuracy: 0.78}      # absolute expectation (optional)
        expected_delta: {eval/exact_accuracy: -0.075}  # relative to the baseline (optional)
    grid:                             # ...and/or a cartesian grid; run names built from the values
      arch.L_layers: [1, 2, 4]

Loading is strict: an unknown key names itself and the valid ones, run names must be unique and
safe as directory names and shell words, and every run's config goes through
`trm.config.load_config` before anything is submitted.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from trm.config import Config, ConfigError, canonical_key, check_runnable, load_config
from trm.fields import Mismatch, coerce, field_types, positive_number
from trm.hpc.backends import backend_for
from trm.hpc.profile import Profile, ProfileError, load_profile
from trm.rundir import DEFAULT_METRIC, resolve_runs_root

SPEC_KEYS = (
    "name",
    "description",
    "config",
    "overrides",
    "profile",
    "resources",
    "baseline",
    "metric",
    "runs",
    "grid",
)
RUN_KEYS = ("name", "overrides", "expected", "expected_delta")
RESOURCE_KEYS = ("nodes", "gpus_per_node", "cpus_per_task", "mem_gb", "time", "tasks_per_node", "queue")
# The sweep owns where a run lives; a spec that set these would scatter its runs.
_RESERVED = ("run.name", "run.root")

# Run and sweep names become directory names, scheduler job names and shell words.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._,=+-]{0,127}$")
_NAME_CHARS = "letters, digits and . _ , = + - (starting with a letter or digit, at most 128)"


class SpecError(ValueError):
    """A sweep spec the user must fix; the message names the file, the field and what is expected."""


@dataclass(frozen=True)
class Resources:
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: float = 16.0
    time: str = "24:00:00"  # D-HH:MM:SS, HH:MM:SS, or whole minutes
    tasks_per_node: int = 0  # 0: one task (rank) per GPU, at least one
    queue: str = ""  # SLURM partition / LSF queue; empty: the profile's

    @property
    def time_min(self) -> int:
        return parse_time_minutes(self.time)

    @property
    def ntasks_per_node(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)


@dataclass
class RunSpec:
    name: str
    overrides: dict[str, str]  # canonical dotted keys -> CLI values, sweep-level ones included
    config: Config  # the resolved config, run.root/run.name set to run_dir
    expected: dict[str, float]
    expected_delta: dict[str, float]
    run_dir: Path
    config_path: Path = field(default=Path())
    command: str = ""  # a jobs.txt line that is not a training: run as a plain shell command
    jobs_command: str = ""  # the jobs.txt line's command text this run came from, if any

    @property
    def trains(self) -> bool:
        return not self.command

    def train_argv(self) -> list[str]:
        """Arguments of `tools/train.py` / `trm.train.entry.main` for this run."""
        return [
            str(self.config_path),
            *(f"{k}={v}" for k, v in self.overrides.items()),
            f"run.root={self.run_dir.parent}",
            f"run.name={self.name}",
        ]


@dataclass
class Sweep:
    name: str
    path: Path
    runs: list[RunSpec]
    baseline: str | None
    metric: str
    resources: Resources
    profile: Profile
    runs_root: Path
    config_path: Path = field(default=Path())
    repo_root: Path = field(default=Path())
    description: str = ""

    @property
    def dir(self) -> Path:
        return self.runs_root / self.name

    def run(self, name: str) -> RunSpec:
        for r in self.runs:
            if r.name == name:
                return r
        raise SpecError(f"{self.path}: no run named '{name}'; runs: {', '.join(r.name for r in self.runs)}")


# ----------------------------------------------------------------------------------------------


def parse_time_minutes(text: str | int, where: str = "time") -> int:
    """SLURM-style `D-HH:MM:SS` / `HH:MM:SS`, or whole minutes; `HH:MM` is refused as ambiguous."""
    if isinstance(text, bool):
        raise SpecError(f'{where}: expected a duration like "24:00:00" or minutes, got {text!r}')
    if isinstance(text, int):
        minutes = text
    else:
        s = str(text).strip()
        m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", s)
        if m:
            days, h, mi, sec = (int(g) if g else 0 for g in m.groups())
            if mi >= 60 or sec >= 60:
                raise SpecError(f"{where}: '{s}' has minutes or seconds >= 60")
            minutes = math.ceil(((days * 24 + h) * 60 + mi) + sec / 60)
        elif re.fullmatch(r"\d+", s):
            minutes = int(s)
        elif re.fullmatch(r"\d+:\d+", s):
            raise SpecError(
                f"{where}: '{s}' is ambiguous (SLURM reads MM:SS, LSF reads HH:MM); "
                f'write HH:MM:SS (e.g. "{s}:00") or whole minutes'
            )
        else:
            raise SpecError(f'{where}: expected a duration like "24:00:00", "1-00:00:00" or minutes, got {s!r}')
    if minutes < 1:
        raise SpecError(f"{where}: the time limit must be at least one minute, got {text!r}")
    return minutes


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}: expected a name (a non-empty string), got {name!r}")
    if not NAME_RE.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._,=+-]", c)})
        what = f"contains {' '.join(repr(c) for c in bad)}" if bad else "is not allowed"
        raise SpecError(
            f"{where}: name '{name}' {what}; names become directories, job names and shell "
            f"words, so use only {_NAME_CHARS}"
        )
    return name


def override_text(value: Any, where: str) -> str:
    """A YAML value as the `key=value` text `trm.config.load_config` parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    raise SpecError(f"{where}: expected a number, string, boolean or list, got {value!r}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a mapping (key: value), got {value!r}")
    return value


def _check_keys(raw: dict[str, Any], valid: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in valid:
            raise SpecError(f"{where}: unknown key '{key}'. Valid keys: {', '.join(valid)}")


def _override_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise SpecError(f"{where}: keys must be strings, got {key!r}")
    canon = canonical_key(key)
    if canon in _RESERVED:
        raise SpecError(
            f"{where}: '{key}' is set by the sweep (runs live in <runs_root>/<sweep>/<run>); rename the run instead"
        )
    return canon


def _overrides(raw: Any, where: str) -> dict[str, str]:
    return {
        _override_key(key, where): override_text(value, f"{where}: {key}")
        for key, value in _mapping(raw, where).items()
    }


def _metrics(raw: Any, where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in _mapping(raw, where).items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SpecError(f"{where}: {key} must be a number, got {value!r}")
        out[str(key)] = float(value)
    return out


_RESOURCE_TYPES = field_types(Resources)
_LOWEST = {"nodes": 1, "cpus_per_task": 1, "gpus_per_node": 0, "tasks_per_node": 0}


def check_resource(key: str, value: Any, where: str, profile: Profile) -> Any:
    """One resource value (from a spec or a command line option), checked; returns it normalised."""
    try:
        if key in _LOWEST:
            return coerce(value, _RESOURCE_TYPES[key], strict=True, low=_LOWEST[key])
        if key == "mem_gb":
            return positive_number(value)
    except Mismatch as e:
        unit = " of GB" if key == "mem_gb" else ""
        raise SpecError(f"{where}: {key} must be {e.expected}{unit}, got {value!r}") from None
    if key == "time":
        parse_time_minutes(value, f"{where}: time")
        return str(value)
    if key == "queue":
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise SpecError(f"{where}: queue must be a queue/partition name, got {value!r}")
        if profile.queues and value not in profile.queues:
            raise SpecError(
                f"{where}: queue '{value}' is not one of the queues of profile {profile.name}: "
                f"{', '.join(profile.queues)}"
            )
        return value
    raise SpecError(f"{where}: unknown key '{key}'. Valid keys: {', '.join(RESOURCE_KEYS)}")


def _resources(raw: Any, where: str, profile: Profile) -> Resources:
    raw = _mapping(raw, where)
    _check_keys(raw, RESOURCE_KEYS, where)
    kw: dict[str, Any] = {key: check_resource(key, value, where, profile) for key, value in raw.items()}
    return check_resources(Resources(**kw), where, profile)


def check_resources(res: Resources, where: str, profile: Profile) -> Resources:
    """What holds for the whole request on `profile`'s scheduler."""
    if not backend_for(profile.scheduler).multi_node and res.nodes != 1:
        raise SpecError(
            f"{where}: nodes={res.nodes}, but the {profile.scheduler} backend runs single-node "
            f"jobs only (ranks are spread over the GPUs of one host)"
        )
    return res


def find_repo_root(start: Path) -> Path:
    """The nearest ancestor holding pyproject.toml (the checkout the spec belongs to), else cwd."""
    for d in [start, *start.parents]:
        if (d / "pyproject.toml").is_file():
            return d
    return Path.cwd()


def _grid_runs(raw: Any, where: str) -> list[tuple[str, dict[str, str]]]:
    grid = _mapping(raw, where)
    if not grid:
        return []
    axes: list[tuple[str, list[str]]] = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: {key} must be a non-empty list of values, got {values!r}")
        axes.append((_override_key(key, where), [override_text(v, f"{where}: {key}") for v in values]))
    last = [k.split(".")[-1] for k, _ in axes]
    labels = [short if last.count(short) == 1 else k for k, short in zip([k for k, _ in axes], last)]
    runs = []
    for combo in itertools.product(*(vals for _, vals in axes)):
        parts = [f"{label}={re.sub(r'[^A-Za-z0-9._+-]+', '-', v).strip('-') or 'x'}" for label, v in zip(labels, combo)]
        runs.append((",".join(parts), {k: v for (k, _), v in zip(axes, combo)}))
    return runs


class _Entry(NamedTuple):
    """One run as the spec lists it (from `runs:` or `grid:`), before its config is resolved."""

    name: str
    where: str
    overrides: dict[str, str]
    expected: dict[str, float]
    expected_delta: dict[str, float]


def _read_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"sweep spec '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not valid UTF-8 YAML: {e}") from None
    raw = _mapping(raw, str(path))
    _check_keys(raw, SPEC_KEYS, str(path))
    return raw


def _base_config(raw: dict[str, Any], where: str, repo_root: Path) -> Path:
    if not isinstance(raw.get("config"), str):
        raise SpecError(f"{where}: config must name the base config file, e.g. trm/configs/maze.yaml")
    config_path = Path(raw["config"])
    config_path = config_path if config_path.is_absolute() else repo_root / config_path
    if not config_path.is_file():
        raise SpecError(f"{where}: config '{raw['config']}' does not exist (looked at {config_path})")
    return config_path


def _listed_runs(raw: dict[str, Any], where: str) -> list[_Entry]:
    runs_raw = raw.get("runs") or []
    if not isinstance(runs_raw, list):
        raise SpecError(f"{where}: runs must be a list of runs (each with a name), got {runs_raw!r}")
    entries = []
    for i, item in enumerate(runs_raw):
        rwhere = f"{where}: runs[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        item = _mapping(item, rwhere)
        _check_keys(item, RUN_KEYS, rwhere)
        entries.append(
            _Entry(
                check_name(item.get("name"), f"{rwhere}: name"),
                rwhere,
                _overrides(item.get("overrides"), f"{rwhere}: overrides"),
                _metrics(item.get("expected"), f"{rwhere}: expected"),
                _metrics(item.get("expected_delta"), f"{rwhere}: expected_delta"),
            )
        )
    return entries


def _entries(raw: dict[str, Any], where: str) -> list[_Entry]:
    """The listed runs, then the grid's; at least one, names unique."""
    entries = _listed_runs(raw, where)
    for gname, gover in _grid_runs(raw.get("grid"), f"{where}: grid"):
        gwhere = f"{where}: grid run '{gname}'"
        entries.append(_Entry(check_name(gname, gwhere), gwhere, gover, {}, {}))
    if not entries:
        raise SpecError(f"{where}: no runs; add a `runs:` list and/or a `grid:`")
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.name in seen:
            raise SpecError(
                f"{entry.where}: run name '{entry.name}' is used twice (also by {seen[entry.name]}); "
                f"run names must be unique within a sweep"
            )
        seen[entry.name] = entry.where
    return entries


def _baseline_and_metric(raw: dict[str, Any], where: str, entries: list[_Entry]) -> tuple[str | None, str]:
    names = [e.name for e in entries]
    baseline = raw.get("baseline")
    if baseline is not None and baseline not in names:
        raise SpecError(f"{where}: baseline '{baseline}' is not one of the runs: {', '.join(names)}")
    metric = raw.get("metric", DEFAULT_METRIC)
    if not isinstance(metric, str) or not metric:
        raise SpecError(f"{where}: metric must be a metric name such as {DEFAULT_METRIC}, got {metric!r}")
    return baseline, metric


def _resolved_run(entry: _Entry, common: dict[str, str], run_dir: Path, config_path: Path, baseline: bool) -> RunSpec:
    """The run with its config loaded and checked as the trainer would on the node."""
    if entry.expected_delta and not baseline:
        raise SpecError(f"{entry.where}: expected_delta needs a `baseline:` run to be relative to")
    overrides = {**common, **entry.overrides}
    run = RunSpec(entry.name, overrides, Config(), entry.expected, entry.expected_delta, run_dir, config_path)
    try:
        run.config = load_config(config_path, run.train_argv()[1:])
        check_runnable(run.config)  # what the trainer would refuse on the node
    except ConfigError as e:
        raise SpecError(f"{entry.where} (run '{entry.name}'): invalid config: {e}") from None
    return run


def load_sweep(path: str | Path, runs_root: str | Path | None = None, profile: str | Path | None = None) -> Sweep:
    """Load and validate a sweep spec.

    `runs_root`: where `<sweep>/<run>` directories go; None means the profile's `runs_root`, else
    `runs` (relative paths are taken from the current directory). `profile` overrides the spec's.
    """
    path = Path(path).resolve()
    where = str(path)
    raw = _read_spec(path)
    repo_root = find_repo_root(path.parent)
    name = check_name(raw.get("name"), f"{where}: name")

    try:
        prof = load_profile(profile if profile is not None else raw.get("profile", "local"), repo_root)
    except ProfileError as e:
        raise SpecError(f"{where}: profile: {e}") from None
    resources = _resources(raw.get("resources"), f"{where}: resources", prof)
    config_path = _base_config(raw, where, repo_root)
    common = _overrides(raw.get("overrides"), f"{where}: overrides")

    root = resolve_runs_root(runs_root, prof.runs_root)
    entries = _entries(raw, where)
    baseline, metric = _baseline_and_metric(raw, where, entries)
    runs = [_resolved_run(e, common, root / name / e.name, config_path, baseline is not None) for e in entries]
    description = raw.get("description") or ""
    return Sweep(name, path, runs, baseline, metric, resources, prof, root, config_path, repo_root, str(description))
