"""From a loaded sweep to jobs: plan (never clobber), freeze configs, render, submit, record.

    result = submit_sweep(sweep, existing="refuse")        # or "skip", "resume"
    paths = dry_run(sweep, out_dir)                        # the scripts that would be submitted

What happens to runs that already exist is the user's choice: `refuse` (the default) stops before
anything is submitted and names them; `skip` leaves them alone; `resume` resubmits the ones that
failed, were cancelled or never went out, to continue from their checkpoints (`train.resume=auto`),
and leaves queued, running and finished ones alone. A run's `config.yaml` is frozen at its first
submit; resubmitting with a different computing config is refused. With a scheduler, several runs
go out as job arrays, chunked under the profile's `array_limit`; without one (`local`), runs train
one after the other in the foreground.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trm.config import ConfigError, frozen_config_diff, to_yaml
from trm.hpc.backends import backend_for, make_executor
from trm.hpc.job import TrainJob
from trm.hpc.profile import protect_dir, write_private
from trm.hpc.render import ScriptRequest, job_python, render_script, submitit_command
from trm.hpc.scheduler import ALIVE, job_states
from trm.hpc.shelljob import ShellJob
from trm.hpc.spec import RunSpec, Sweep
from trm.rundir import (
    CONFIG,
    FINISHED,
    STATUS,
    STATUS_LOCK,
    RunPaths,
    atomic_write_text,
    read_status,
    update_status,
    utc_now,
    write_status,
)

EXISTING = ("refuse", "skip", "resume")


class SubmitError(RuntimeError):
    """Nothing (or only part, as the message says) was submitted; the message says why and what to do."""


@dataclass
class SubmitResult:
    submitted: dict[str, str] = field(default_factory=dict)  # run -> job id
    skipped: dict[str, str] = field(default_factory=dict)  # run -> reason
    failed: dict[str, str] = field(default_factory=dict)  # run -> why (local runs that failed)


def logs_dir(sweep: Sweep) -> Path:
    return sweep.dir / "logs"


def _exists(run: RunSpec) -> bool:
    return RunPaths(run.run_dir).exists()


def _frozen_config_problem(run: RunSpec) -> str | None:
    path = run.run_dir / CONFIG
    try:
        diff = frozen_config_diff(path, run.config)
    except ConfigError as e:
        return str(e)
    return f"{path} was frozen with a different config: {'; '.join(diff)}" if diff else None


def plan(sweep: Sweep, runs: list[RunSpec], existing: str) -> tuple[list[RunSpec], dict[str, str]]:
    """Which runs to submit, and why the others are skipped. Raises SubmitError for `refuse`."""
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    present = [r for r in runs if _exists(r)]
    if present and existing == "refuse":
        names = ", ".join(r.name for r in present[:10]) + (" ..." if len(present) > 10 else "")
        raise SubmitError(
            f"sweep {sweep.name}: {len(present)} run(s) already exist under {sweep.dir}: {names}. "
            f"Nothing was submitted. Use --skip-existing to submit only the new runs, or --resume to "
            f"also resubmit failed/cancelled runs from their checkpoints."
        )
    statuses = {r.name: read_status(r.run_dir) for r in present}
    live_ids = [s["job_ids"][-1] for s in statuses.values() if s.get("job_ids") and s.get("state") not in FINISHED]
    states = job_states(sweep.profile, live_ids) if existing == "resume" and live_ids else {}
    todo, skipped = [], {}
    for run in runs:
        if run not in present:
            todo.append(run)
            continue
        status = statuses[run.name]
        if existing == "skip":
            skipped[run.name] = f"exists ({status.get('state', 'no status')})"
            continue
        state = status.get("state", "")
        last = (status.get("job_ids") or [""])[-1]
        if state == "done":
            skipped[run.name] = "done"
        elif state not in FINISHED and last and states.get(last, "UNKNOWN") in ALIVE:
            skipped[run.name] = f"{state} as job {last}"
        elif problem := _frozen_config_problem(run):
            raise SubmitError(
                f"run {run.name}: {problem}. Nothing was submitted; rename the run or restore its config."
            )
        else:
            todo.append(run)
    return todo, skipped


def check_datasets(sweep: Sweep, runs: list[RunSpec]) -> None:
    """Every dataset a run trains on must exist (relative paths are taken from the repo root)."""
    missing: dict[str, list[str]] = {}
    for run in runs:
        if not run.trains:
            continue
        d = run.config.data
        for p in [*d.data_paths, *d.data_paths_test]:
            path = Path(p) if Path(p).is_absolute() else sweep.repo_root / p
            if not (path / "train").is_dir() and not (path / "test").is_dir():
                missing.setdefault(p, []).append(run.name)
    if missing:
        lines = "; ".join(
            f"{p} (runs {', '.join(names[:5])}{' ...' if len(names) > 5 else ''})" for p, names in missing.items()
        )
        raise SubmitError(
            f"sweep {sweep.name}: dataset(s) not found: {lines}. Nothing was submitted. Build them "
            f"first (python tools/build_data.py ...), or pass --no-data-check if they exist only on "
            f"the compute nodes."
        )


def check_ranks(sweep: Sweep, runs: list[RunSpec]) -> None:
    """The batch sizes must split over the job's ranks (nodes x tasks per node), as the trainer
    requires on the node: refused here, naming the run and the key, before anything goes out."""
    ranks = sweep.resources.nodes * sweep.resources.ntasks_per_node
    for run in runs:
        if not run.trains:
            continue
        for key, size in (
            ("train.global_batch_size", run.config.train.global_batch_size),
            ("eval.global_batch_size", run.config.eval.global_batch_size),
        ):
            if size and size % ranks:
                raise SubmitError(
                    f"run {run.name}: {key} ({size}) must be divisible by the job's {ranks} ranks "
                    f"({sweep.resources.nodes} node(s) x {sweep.resources.ntasks_per_node} task(s)); "
                    f"nothing was submitted. Change the batch size or the GPUs/tasks per node."
                )


def _chunks(runs: list[RunSpec], size: int) -> list[list[RunSpec]]:
    return [runs[i : i + size] for i in range(0, len(runs), size)]


def dry_run(
    sweep: Sweep, runs: list[RunSpec], out_dir: Path, array: bool = True, python: str | None = None
) -> list[Path]:
    """Write the scripts `submit_sweep` would submit, one per job (an array chunk or a run)."""
    check_ranks(sweep, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = logs_dir(sweep)
    command = submitit_command(python or job_python(sweep.profile, sweep.repo_root), folder)
    prof, backend = sweep.profile, backend_for(sweep.profile.scheduler)
    ext = backend.script_suffix
    written = []
    if array and backend.arrays and len(runs) > 1:
        groups = _chunks(runs, prof.array_limit)
        for i, chunk in enumerate(groups):
            req = ScriptRequest(
                prof,
                sweep.resources,
                sweep.name,
                folder,
                command,
                sweep.repo_root,
                array_size=len(chunk),
                runs=tuple(r.name for r in chunk),
                sweep=sweep.name,
            )
            path = out_dir / (f"{sweep.name}.array{i}.{ext}" if len(groups) > 1 else f"{sweep.name}.array.{ext}")
            write_private(path, render_script(req), prof)
            written.append(path)
    else:
        for run in runs:
            req = ScriptRequest(
                prof,
                sweep.resources,
                f"{sweep.name}.{run.name}",
                folder,
                command,
                sweep.repo_root,
                runs=(run.name,),
                sweep=sweep.name,
            )
            path = out_dir / f"{run.name}.{ext}"
            write_private(path, render_script(req), prof)
            written.append(path)
    return written


def _prepare(run: RunSpec, scheduler: str, jobs_file: Path | None = None) -> Callable[[], None]:
    """Freeze the config and mark the run pending before it goes out (the job may start at once and
    must find both); returns the undo for a refused submission. A run from a jobs.txt also records
    its line, which the job marks [x]/[!] when it ends."""
    previous = read_status(run.run_dir)
    new_dir = not run.run_dir.exists()
    new_config = run.trains and not (run.run_dir / CONFIG).exists()
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if new_config:
        atomic_write_text(run.run_dir / CONFIG, to_yaml(run.config))
    line = {"jobs_file": str(jobs_file), "jobs_command": run.jobs_command} if jobs_file else {}
    update_status(
        run.run_dir,
        state="pending",
        scheduler=scheduler,
        message="",
        **line,
        **({"command": run.command} if run.command else {}),
        **({} if previous.get("submitted_at") else {"submitted_at": utc_now()}),
    )

    def undo() -> None:
        if previous:
            write_status(run.run_dir, previous)
        else:
            (run.run_dir / STATUS).unlink(missing_ok=True)
        if new_config:
            (run.run_dir / CONFIG).unlink(missing_ok=True)
        if new_dir:
            for leftover in (STATUS_LOCK,):
                (run.run_dir / leftover).unlink(missing_ok=True)
            try:
                run.run_dir.rmdir()
            except OSError:
                pass

    return undo


def _files(folder: Path) -> set[Path]:
    return set(folder.iterdir()) if folder.is_dir() else set()


def _remove_leftovers(folder: Path, before: set[Path], folder_existed: bool, keep: object) -> None:
    """After a refused submission: the pickles and scripts submitit wrote for jobs that never went out
    (a job that did go out keeps its files: they carry its job id in their names)."""
    kept = [str(k).split("_")[0] for k in keep]  # type: ignore[attr-defined]
    for path in _files(folder) - before:
        if path.is_file() and not any(path.name.startswith(f"{k}_") for k in kept):
            path.unlink(missing_ok=True)
    if not folder_existed:
        try:
            folder.rmdir()
        except OSError:
            pass


def job_for(sweep: Sweep, run: RunSpec) -> TrainJob | ShellJob:
    """What submitit runs for `run`: a training, or a jobs.txt line's plain command (in its folder)."""
    return TrainJob(run.run_dir) if run.trains else ShellJob(run.run_dir, run.command, sweep.path.parent)


def _jobs_file(sweep: Sweep) -> Path | None:
    return sweep.path if sweep.path.suffix == ".txt" else None


def _record(run: RunSpec, job) -> None:  # noqa: ANN001 (a submitit Job)
    update_status(run.run_dir, add_job_id=job.job_id, add_log_path=str(job.paths.stdout))


@dataclass
class _Submission:
    """The runs one submit_sweep call sends out, and how to take back the ones that did not go."""

    sweep: Sweep
    todo: list[RunSpec]
    result: SubmitResult
    folder: Path  # submitit's folder: scripts, pickles, logs
    folder_existed: bool
    before: set[Path]  # the folder's files before this call
    undo: dict[str, Callable[[], None]] = field(default_factory=dict)

    def executor(self, python: str | None) -> Any:
        sweep = self.sweep
        return make_executor(sweep.profile, self.folder, sweep.resources, sweep.repo_root, sweep.name, python)

    def record(self, run: RunSpec, job: Any) -> None:
        _record(run, job)
        self.result.submitted[run.name] = job.job_id

    def refused(self, chunk: list[RunSpec], error: Exception) -> SubmitError:
        """Undo every run that did not go out and say which did."""
        submitted = self.result.submitted
        for run in self.todo:
            if run.name not in submitted:
                self.undo[run.name]()
        _remove_leftovers(self.folder, self.before, self.folder_existed, keep=submitted.values())
        names = ", ".join(r.name for r in chunk)
        done = ", ".join(f"{k} ({v})" for k, v in submitted.items()) or "none"
        return SubmitError(
            f"sweep {self.sweep.name}: the scheduler refused run(s) {names}:\n{error}\n"
            f"Already submitted: {done}. Not submitted: "
            f"{', '.join(r.name for r in self.todo if r.name not in submitted)}."
        )


def submit_sweep(
    sweep: Sweep,
    runs: list[RunSpec] | None = None,
    existing: str = "refuse",
    array: bool = True,
    data_check: bool = True,
    python: str | None = None,
    say: Callable[[str], None] = print,
) -> SubmitResult:
    runs = list(sweep.runs if runs is None else runs)
    check_ranks(sweep, runs)
    todo, skipped = plan(sweep, runs, existing)
    result = SubmitResult(skipped=skipped)
    for name, why in skipped.items():
        say(f"skip {name}: {why}")
    if not todo:
        return result
    if data_check:
        check_datasets(sweep, todo)
    folder = protect_dir(logs_dir(sweep), sweep.profile)  # scripts and logs: owner (or group) only
    sub = _Submission(sweep, todo, result, folder, folder.exists(), _files(folder))
    sub.undo = {run.name: _prepare(run, sweep.profile.scheduler, _jobs_file(sweep)) for run in todo}
    if backend_for(sweep.profile.scheduler).foreground:
        return _run_locally(sweep, todo, result, python, say)
    if array and len(todo) > 1:
        _submit_arrays(sub, python, say)
    else:
        _submit_each(sub, python, say)
    return result


def _submit_arrays(sub: _Submission, python: str | None, say: Callable[[str], None]) -> None:
    """One array job per chunk of the profile's `array_limit` runs."""
    for chunk in _chunks(sub.todo, sub.sweep.profile.array_limit):
        executor = sub.executor(python)
        try:
            with executor.batch():
                jobs = [executor.submit(job_for(sub.sweep, r)) for r in chunk]
        except Exception as e:  # submitit raises FailedJobError with the scheduler's own message
            raise sub.refused(chunk, e) from None
        for run, job in zip(chunk, jobs):
            sub.record(run, job)
        say(f"submitted {len(chunk)} run(s) of {sub.sweep.name} as array job {jobs[0].job_id.split('_')[0]}")


def _submit_each(sub: _Submission, python: str | None, say: Callable[[str], None]) -> None:
    """One job per run, each named <sweep>.<run>."""
    executor = sub.executor(python)
    for run in sub.todo:
        executor.update_parameters(job_name=f"{sub.sweep.name}.{run.name}")
        try:
            job = executor.submit(job_for(sub.sweep, run))
        except Exception as e:
            raise sub.refused([run], e) from None
        sub.record(run, job)
        say(f"submitted {run.name} as job {job.job_id} (log {job.paths.stdout})")


def _run_locally(
    sweep: Sweep, todo: list[RunSpec], result: SubmitResult, python: str | None, say: Callable[[str], None]
) -> SubmitResult:
    """No scheduler: one run after the other through submitit's local executor, in the foreground."""
    for i, run in enumerate(todo, 1):
        executor = make_executor(
            sweep.profile,
            protect_dir(logs_dir(sweep), sweep.profile),
            sweep.resources,
            sweep.repo_root,
            f"{sweep.name}.{run.name}",
            python,
        )
        job = executor.submit(job_for(sweep, run))
        _record(run, job)
        result.submitted[run.name] = job.job_id
        say(f"[{i}/{len(todo)}] {run.name}: training locally (log {job.paths.stdout})")
        try:
            job.result()
        except KeyboardInterrupt:
            job.cancel()
            update_status(run.run_dir, state="cancelled", message="interrupted (Ctrl-C)")
            raise
        except Exception as e:  # the run failed; its status and log say why, the sweep goes on
            status = read_status(run.run_dir)
            if status.get("state") not in FINISHED:
                last = str(e).strip().splitlines()[-1][:500] if str(e).strip() else type(e).__name__
                update_status(run.run_dir, state="failed", message=f"failed: {last}")
            status = read_status(run.run_dir)
            result.failed[run.name] = status.get("message") or str(e)
            word = "CANCELLED" if status.get("state") == "cancelled" else "FAILED"
            say(f"[{i}/{len(todo)}] {run.name}: {word}: {result.failed[run.name]}")
            continue
        say(f"[{i}/{len(todo)}] {run.name}: done")
    return result


def cancel_sweep(sweep: Sweep, runs: list[RunSpec] | None = None, say: Callable[[str], None] = print) -> list[str]:
    """Cancel the queued/running jobs of the runs (one scheduler call) and mark them cancelled."""
    from trm.hpc.scheduler import cancel_jobs

    targets = {}
    for run in sweep.runs if runs is None else runs:
        status = read_status(run.run_dir)
        if status.get("job_ids") and status.get("state") not in FINISHED:
            targets[run.name] = (run, status["job_ids"][-1])
    if not targets:
        say(f"sweep {sweep.name}: nothing queued or running to cancel")
        return []
    # Marked first: a job stopped by the cancel's SIGTERM checkpoints and must not requeue itself.
    for run, job in targets.values():
        update_status(run.run_dir, state="cancelled", message=f"cancelled (job {job}) by tools/submit.py --cancel")
    output = cancel_jobs(sweep.profile, [job for _, job in targets.values()])
    for name, (_, job) in targets.items():
        say(f"cancelled {name} (job {job})")
    if output:
        say(output)
    return list(targets)
