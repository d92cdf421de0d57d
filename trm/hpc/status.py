"""One line per run of a sweep: state, progress, last eval metric, job ids, log (tools/status.py).

    rows = sweep_rows(sweep)              # reads status.json + summary.json, one scheduler query
    print(format_table(rows, sweep.metric))

The run's own files are the source of truth; the scheduler is asked (in one batched call) only
about runs whose status says they are queued or running, to notice jobs that died without saying
so (killed, out of memory, cancelled by hand): those show as failed/cancelled with the scheduler's
word. Preemptions and timeouts the run survived are counted in the state ("running, preempted x2").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trm.hpc.runstate import FINISHED, read_status
from trm.hpc.scheduler import ALIVE, SchedulerError, job_states
from trm.hpc.spec import Sweep


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
    try:
        data = json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _metric(summary: dict[str, Any], metric: str) -> float | None:
    final = summary.get("final") or {}
    if isinstance(final, dict) and isinstance(final.get(metric), (int, float)):
        return float(final[metric])
    best = (summary.get("best") or {}).get(metric)
    if isinstance(best, dict) and isinstance(best.get("value"), (int, float)):
        return float(best["value"])
    return None


def sweep_rows(sweep: Sweep, query_scheduler: bool = True) -> list[RunRow]:
    statuses = {r.name: read_status(r.run_dir) for r in sweep.runs}
    live = {
        name: s["job_ids"][-1]
        for name, s in statuses.items()
        if s.get("job_ids") and s.get("state") not in FINISHED
    }
    states: dict[str, str] = {}
    scheduler_note = ""
    if query_scheduler and live:
        try:
            states = job_states(sweep.profile, live.values())
        except SchedulerError as e:
            scheduler_note = f"scheduler not asked: {e}"
    rows = []
    for run in sweep.runs:
        status, summary = statuses[run.name], _summary(run.run_dir)
        state = status.get("state") or ("done" if summary.get("state") == "done" else "not submitted")
        message = status.get("message", "")
        sched = states.get(live.get(run.name, ""), "")
        if sched and sched not in ALIVE and state not in FINISHED:
            # the job is gone but never said so: trust the scheduler's word
            state = "cancelled" if sched == "CANCELLED" else "failed"
            message = message or f"job {live[run.name]} ended as {sched} without finishing"
        elif sched == "SUSPENDED":
            state = "suspended"
        elif scheduler_note and run.name in live:
            message = message or scheduler_note
        logs = status.get("log_paths") or []
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


def format_table(rows: list[RunRow], metric: str) -> str:
    header = ["run", "state", "step", "epoch", metric, "jobs", "log"]
    lines = [header]
    for r in rows:
        step = (
            f"{r.step}/{r.total_steps}"
            if r.step is not None and r.total_steps
            else (str(r.step or "") or "-")
        )
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
