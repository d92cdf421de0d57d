"""What to collect: a sweep is a named list of run directories, maybe a baseline and expected results.

sweep = resolve_input("jobs/maze_ablations.yaml")            # a sweep spec (trm.hpc.spec)
sweep = resolve_input("runs/maze_ablations", baseline="baseline")   # a folder of run directories
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trm.hpc.collect.rundir import config_as_text
from trm.rundir import DEFAULT_METRIC, RUN_FILES, looks_like_run_dir


class CollectError(ValueError):
    """An input the user must fix (not a run directory, unknown baseline, unreadable shared file)."""


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
        raise CollectError(f"{folder}: not a directory (expected a sweep spec .yaml or a folder of run directories)")
    if looks_like_run_dir(folder):
        run_dirs = [folder]
    else:
        run_dirs = sorted(p for p in folder.iterdir() if looks_like_run_dir(p))
    if not run_dirs:
        sweeps = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(map(looks_like_run_dir, p.iterdir())))
        hint = f"; it holds sweep folders ({', '.join(sweeps)}): name those instead" if sweeps else ""
        raise CollectError(
            f"{folder}: no run directories in it (a run directory holds at least one of {', '.join(RUN_FILES)}){hint}"
        )
    runs = [RunEntry(name=p.name, run_dir=p) for p in run_dirs]
    sweep = SweepEntry(name=folder.resolve().name, source=folder, runs=runs, metric=metric or DEFAULT_METRIC)
    _set_baseline(sweep, baseline)
    return sweep


def sweep_from_spec(
    path: Path, runs_root: Path | str | None = None, baseline: str | None = None, metric: str | None = None
) -> SweepEntry:
    """A sweep spec (`jobs/<sweep>.yaml`): its runs in spec order, their run dirs, baseline, expectations."""
    from trm.hpc.spec import SpecError, load_sweep  # imports more than a folder collection needs

    try:
        spec = load_sweep(path, runs_root=runs_root)
    except SpecError as e:
        raise CollectError(str(e)) from None
    runs = [
        RunEntry(
            name=r.name,
            run_dir=Path(r.run_dir),
            config=config_as_text(r.config),
            expected=dict(r.expected),
            expected_delta=dict(r.expected_delta),
        )
        for r in spec.runs
    ]
    sweep = SweepEntry(
        name=spec.name,
        source=Path(path),
        runs=runs,
        baseline=spec.baseline,
        metric=metric or spec.metric or DEFAULT_METRIC,
    )
    _set_baseline(sweep, baseline or spec.baseline)
    folder = Path(spec.runs_root) / spec.name
    if folder.is_dir():
        known = {r.run_dir.resolve() for r in runs}
        extra = sorted(p.name for p in folder.iterdir() if looks_like_run_dir(p) and p.resolve() not in known)
        if extra:
            sweep.warnings.append(
                f"{folder} holds run directories the spec does not name (not collected): {', '.join(extra)}"
            )
    return sweep


def _set_baseline(sweep: SweepEntry, baseline: str | None) -> None:
    if baseline is None:
        sweep.baseline = None
        return
    names = [r.name for r in sweep.runs]
    if baseline not in names:
        raise CollectError(
            f"{sweep.source}: baseline '{baseline}' is not a run of sweep '{sweep.name}'; runs: {', '.join(names)}"
        )
    sweep.baseline = baseline
    sweep.runs.sort(key=lambda r: r.name != baseline)  # stable: the baseline first, the rest as they were


def sweep_from_jobs_file(
    path: Path, runs_root: Path | str | None = None, baseline: str | None = None, metric: str | None = None
) -> SweepEntry:
    """A jobs.txt submitted with tools/submit.py: its lines' run directories, under <runs_root>/<file stem>/."""
    from trm.hpc.jobs_file import JobsFileError, jobs_sweep
    from trm.hpc.profile import LOCAL
    from trm.hpc.spec import Resources, SpecError

    try:
        spec, _ = jobs_sweep(path, LOCAL, Resources(), runs_root, states=("pending", "running", "done", "failed"))
    except (SpecError, JobsFileError) as e:
        raise CollectError(str(e)) from None
    runs = [
        RunEntry(name=r.name, run_dir=Path(r.run_dir), config=config_as_text(r.config) if r.trains else None)
        for r in spec.runs
    ]
    sweep = SweepEntry(name=spec.name, source=Path(path), runs=runs, metric=metric or DEFAULT_METRIC)
    _set_baseline(sweep, baseline)
    return sweep


def resolve_input(
    path: Path | str, runs_root: Path | str | None = None, baseline: str | None = None, metric: str | None = None
) -> SweepEntry:
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise CollectError(f"sweep spec '{path}' does not exist")
        return sweep_from_spec(path, runs_root, baseline, metric)
    if path.suffix == ".txt":
        if not path.is_file():
            raise CollectError(f"jobs file '{path}' does not exist")
        return sweep_from_jobs_file(path, runs_root, baseline, metric)
    if not path.exists():
        raise CollectError(
            f"'{path}' does not exist (expected a sweep spec .yaml, a jobs.txt, a runs/<sweep>/ folder or a run folder)"
        )
    return sweep_from_folder(path, baseline, metric)
