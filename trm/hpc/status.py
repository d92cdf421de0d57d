"""One line per run of a sweep: state, progress, last eval metric, job ids, log (tools/status.py).

    rows = sweep_rows(sweep)              # reads status.json + summary.json, one scheduler query
    print(format_table(rows, sweep.metric))

The run's own files are the source of truth; the scheduler is asked (in one batched call) only
about runs whose status says they are queued or running, to notice jobs that died without saying
so (killed, out of memory, cancelled by hand): those show as failed/cancelled with the scheduler's
word. Preemptions and timeouts the run survived are counted in the state ("running, preempted x2").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trm.hpc.backends import UnknownSchedulerError
from trm.hpc.profile import Profile
from trm.hpc.scheduler import ALIVE, SchedulerError, job_states
from trm.hpc.spec import SpecError, Sweep
from trm.rundir import DEFAULT_METRIC, FINISHED, RUN_FILES, SUMMARY, looks_like_run_dir, read_json, read_status


@dataclass
class RunRow:
    run: str
    state: str  # not submitted | pending | running | requeued | suspended | done | failed | cancelled
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    metric: float | None = None
    preemptions: int = 0
    timeouts: int = 0
    attempts: int = 0
    job_ids: list[str] = field(default_factory=list)
    log: str = ""
    message: str = ""

    @property
    def display_state(self) -> str:
        extra = [f"{n} x{c}" for n, c in (("preempted", self.preemptions), ("timed out", self.timeouts)) if c]
        return self.state + (f", {', '.join(extra)}" if extra else "")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "display_state": self.display_state}


def _summary(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / SUMMARY)


def _metric(summary: dict[str, Any], metric: str) -> float | None:
    final = summary.get("final") or {}
    if isinstance(final, dict) and isinstance(final.get(metric), (int, float)):
        return float(final[metric])
    best = (summary.get("best") or {}).get(metric)
    if isinstance(best, dict) and isinstance(best.get("value"), (int, float)):
        return float(best["value"])
    return None


# What a scheduler's final word means for a run that never said how it ended.
_ENDED_AS = {
    "CANCELLED": ("cancelled", "cancelled (job {job} ended as CANCELLED before the trainer could say so)"),
    "TIMEOUT": ("failed", "timed out (job {job} hit its time limit before it could checkpoint)"),
    "PREEMPTED": ("cancelled", "preempted (job {job} ended as PREEMPTED and was not requeued)"),
    "OUT_OF_MEMORY": ("failed", "failed: out of memory (job {job} ended as OUT_OF_MEMORY)"),
    "NODE_FAIL": ("failed", "failed: node failure (job {job} ended as NODE_FAIL)"),
}


def _live_states(sweep: Sweep, statuses: dict[str, dict[str, Any]], live: dict[str, str]) -> tuple[dict, str]:
    """One batched query per scheduler the live runs were submitted to (status.json says which)."""
    by_scheduler: dict[str, list[str]] = {}
    for name, job in live.items():
        by_scheduler.setdefault(statuses[name].get("scheduler") or sweep.profile.scheduler, []).append(job)
    states: dict[str, str] = {}
    notes = []
    for scheduler, jobs in by_scheduler.items():
        try:
            states.update(job_states(scheduler, jobs))
        except (SchedulerError, UnknownSchedulerError) as e:
            notes.append(f"scheduler not asked: {e}")
    return states, "; ".join(notes)


def sweep_rows(sweep: Sweep, query_scheduler: bool = True) -> list[RunRow]:
    statuses = {r.name: read_status(r.run_dir) for r in sweep.runs}
    live = {
        name: s["job_ids"][-1] for name, s in statuses.items() if s.get("job_ids") and s.get("state") not in FINISHED
    }
    states: dict[str, str] = {}
    scheduler_note = ""
    if query_scheduler and live:
        states, scheduler_note = _live_states(sweep, statuses, live)
    rows = []
    for run in sweep.runs:
        status, summary = statuses[run.name], _summary(run.run_dir)
        state = status.get("state") or ("done" if summary.get("state") == "done" else "not submitted")
        message = status.get("message", "")
        sched = states.get(live.get(run.name, ""), "")
        if sched and sched not in ALIVE and state not in FINISHED:
            # the job is gone but never said so: trust the scheduler's word
            job = live[run.name]
            state, text = _ENDED_AS.get(sched, ("failed", f"failed: job {{job}} ended as {sched} without finishing"))
            message = text.format(job=job)
        elif sched == "SUSPENDED":
            state = "suspended"
        elif scheduler_note and run.name in live:
            message = message or scheduler_note
        logs = [p for p in status.get("log_paths") or [] if Path(p).exists()] or status.get("log_paths") or []
        rows.append(
            RunRow(
                run=run.name,
                state=state,
                step=summary.get("step"),
                total_steps=summary.get("total_steps"),
                epoch=summary.get("epoch"),
                metric=_metric(summary, sweep.metric),
                preemptions=int(status.get("preemptions", 0)),
                timeouts=int(status.get("timeouts", 0)),
                attempts=int(status.get("attempts", 0)),
                job_ids=list(status.get("job_ids") or []),
                log=logs[-1] if logs else "",
                message=message,
            )
        )
    return _dead_runs_failed(sweep, rows, {name: states.get(job, "") for name, job in live.items()})


def _dead_runs_failed(sweep: Sweep, rows: list[RunRow], sched: dict[str, str]) -> list[RunRow]:
    """A run that says `running` but whose trainer has no heartbeat (killed, node lost, run directory
    unwritable) and whose job the scheduler does not call alive is failed, with the reason."""
    from trm.train.runlock import dead_run_message

    for row in rows:
        if row.state == "running" and sched.get(row.run, "") not in ALIVE:
            dead = dead_run_message(sweep.run(row.run).run_dir)
            if dead:
                row.state, row.message = "failed", dead
    return rows


def folder_sweep(folder: Path, profile: Profile | None = None) -> Sweep:
    """A `runs/<sweep>/` folder or one run folder as a sweep of the run directories in it (no spec)."""
    from trm.config import Config
    from trm.hpc.spec import Resources, RunSpec

    folder = Path(folder).resolve()
    run_dirs = [folder] if looks_like_run_dir(folder) else sorted(p for p in folder.iterdir() if looks_like_run_dir(p))
    if not run_dirs:
        raise SpecError(
            f"{folder}: no run directories in it (a run directory holds at least one of {', '.join(RUN_FILES)}); "
            "give a sweep spec, a jobs.txt, a runs/<sweep>/ folder or a run folder"
        )
    runs = [RunSpec(p.name, {}, Config(), {}, {}, p) for p in run_dirs]
    root = run_dirs[0].parent
    if profile is None:  # the scheduler the runs went to, as their status.json says
        scheduler = next((s for s in (read_status(p).get("scheduler") for p in run_dirs) if s), "local")
        profile = Profile(name=scheduler, scheduler=scheduler, venv="")  # only its scheduler is asked
    return Sweep(root.name, folder, runs, None, DEFAULT_METRIC, Resources(), profile, root.parent)


def settle_jobs_file(path: Path, sweep: Sweep, lines: dict[str, Any], rows: list[RunRow] | None = None) -> int:
    """Lines still `[-]` whose run has ended become `[x]` / `[!] ... [exit N]` (a job that died without
    marking its line, or a local run); returns how many lines changed."""
    from trm.hpc.jobs_file import mark_ended

    ended = {r.run: r for r in rows or sweep_rows(sweep, query_scheduler=False) if r.state in FINISHED}
    changed = 0
    for name, line in lines.items():
        row = ended.get(name)
        if row is None or line.state != "running" or not line.owner:
            continue
        code = read_status(sweep.run(name).run_dir).get("exit_code")
        code = 0 if row.state == "done" else code if isinstance(code, int) and code else 1
        changed += mark_ended(path, line.command, line.owner, code)
    return changed


def format_table(rows: list[RunRow], metric: str) -> str:
    header = ["run", "state", "step", "epoch", metric, "jobs", "log"]
    lines = [header]
    for r in rows:
        step = f"{r.step}/{r.total_steps}" if r.step is not None and r.total_steps else (str(r.step or "") or "-")
        lines.append(
            [
                r.run,
                r.display_state,
                step,
                f"{r.epoch:.1f}" if isinstance(r.epoch, (int, float)) else "-",
                f"{r.metric:.4f}" if r.metric is not None else "-",
                ",".join(r.job_ids) or "-",
                r.log or "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(line[:-1], widths)) + "  " + line[-1] for line in lines]
    for r in rows:
        if r.message and r.state not in ("done",):
            out.append(f"  {r.run}: {r.message}")
    return "\n".join(out)
