"""TrainJob: timeout vs preemption, the requeue budget, a cancelled run staying cancelled, and a
real preemption on the local executor (no scheduler): checkpoint, restart, resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from submitit.core.utils import DelayedSubmission, JobPaths
from waits import wait_for

from trm.config import to_yaml
from trm.hpc.backends import make_executor
from trm.hpc.job import EXIT_REQUEUE, TrainJob, TrainJobError, _timed_out
from trm.hpc.profile import LOCAL
from trm.hpc.spec import Resources, load_sweep
from trm.rundir import read_status, update_status

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "sudoku-4x4"


def test_timeout_or_preemption() -> None:
    # 60-minute limit, warning 2 minutes before: a stop after 55 min is the time limit, after 30 a preemption
    assert _timed_out(55 * 60, 60, 120) and not _timed_out(30 * 60, 60, 120)
    # submitit's own rule would call every stop of a 5-minute job a timeout; ours does not
    assert not _timed_out(10, 5, 30) and _timed_out(200, 5, 30)


class FakeEnv:
    """The part of a submitit JobEnvironment TrainJob._requeue uses; `_requeue` records the call."""

    def __init__(self, folder: Path, rank: int = 0) -> None:
        self.paths = JobPaths(folder, job_id="42", task_id=rank)
        self.global_rank = rank
        self.requeued: list[int] = []

    def _requeue(self, countdown: int) -> None:
        self.requeued.append(countdown)


def _pickle(folder: Path, run_dir: Path, timeout_min: int, countdown: int) -> FakeEnv:
    env = FakeEnv(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = DelayedSubmission(TrainJob(run_dir))
    d.set_timeout(timeout_min, countdown)
    d.dump(env.paths.submitted_pickle)
    return env


def test_requeue_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRM_SIGNAL_DELAY_S", "60")
    run_dir = tmp_path / "run"
    job = TrainJob(run_dir)
    env = _pickle(tmp_path / "logs", run_dir, timeout_min=60, countdown=1)
    with pytest.raises(SystemExit) as stop:
        job._requeue(env, elapsed_s=600)  # preempted after 10 min: the budget stays
    assert stop.value.code == EXIT_REQUEUE and env.requeued == [1]
    assert DelayedSubmission.load(env.paths.submitted_pickle)._timeout_countdown == 1
    with pytest.raises(SystemExit):
        job._requeue(env, elapsed_s=3500)  # at the time limit: one timeout used
    assert env.requeued == [1, 0] and DelayedSubmission.load(env.paths.submitted_pickle)._timeout_countdown == 0
    status = read_status(run_dir)
    assert (status["state"], status["preemptions"], status["timeouts"]) == ("requeued", 1, 1)
    # no timeouts left: failed, not requeued; the message counts both time-outs (issue 9: it said "1 times")
    expected = r"^timed out: 2 time-out\(s\), more than the profile's max_num_timeout \(1\)"
    with pytest.raises(TrainJobError, match=expected):
        job._requeue(env, elapsed_s=3500)
    assert env.requeued == [1, 0] and read_status(run_dir)["state"] == "failed"
    assert read_status(run_dir)["timeouts"] == 2 and read_status(run_dir)["message"].startswith("timed out")
    other_rank = FakeEnv(tmp_path / "logs", rank=1)
    with pytest.raises(SystemExit):
        job._requeue(other_rank, elapsed_s=10)
    assert other_rank.requeued == []  # only rank 0 requeues the job


def test_cancelled_run_is_not_requeued(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    update_status(run_dir, state="cancelled")
    env = _pickle(tmp_path / "logs", run_dir, timeout_min=60, countdown=3)
    with pytest.raises(SystemExit):
        TrainJob(run_dir)._requeue(env, elapsed_s=10)
    assert env.requeued == [] and read_status(run_dir)["state"] == "cancelled"


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_local_executor_preemption_restarts_and_resumes(tmp_path: Path, repo_sudoku4: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: s\nconfig: {REPO / 'trm/configs/quickstart.yaml'}\nprofile: local\nruns: [a]\n"
        f"overrides: {{train.max_steps: 60, train.checkpoint_every_steps: 5, arch.hidden_size: 32, "
        f"eval.max_batches: 1, log.progress: false, data.data_paths: [{DATA}]}}\n"
    )
    run = load_sweep(spec, runs_root=tmp_path / "runs").run("a")
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(to_yaml(run.config))  # what tools/submit.py freezes
    executor = make_executor(LOCAL, tmp_path / "logs", Resources(cpus_per_task=1, time="10"), REPO, "s.a")
    job = executor.submit(TrainJob(run.run_dir))
    log = run.run_dir / "train.log"
    wait_for("a checkpoint to resume from", lambda: any((run.run_dir / "checkpoints").glob("*/COMPLETE")), timeout=180)
    tasks = _children(int(job.job_id))  # the controller's task: bash exec'd into python
    assert len(tasks) == 1
    os.kill(tasks[0], signal.SIGUSR2)  # what the scheduler's warning would send
    assert job.result() == 0
    status = read_status(run.run_dir)
    assert status["state"] == "done" and status["preemptions"] == 1 and status["attempts"] == 2, status
    assert "resumed from" in log.read_text()
    assert json.loads((run.run_dir / "summary.json").read_text())["step"] == 60


@pytest.mark.slow
def test_local_cancel_checkpoints_stops_and_resumes_on_request(tmp_path: Path, repo_sudoku4: Path) -> None:
    """The local backend's cancel (TERM through submitit's controller) is a cancel: checkpointed,
    not restarted; a new submission of the run continues from that checkpoint."""
    from trm.hpc.scheduler import cancel_jobs

    spec = tmp_path / "s.yaml"
    spec.write_text(
        f"name: s\nconfig: {REPO / 'trm/configs/quickstart.yaml'}\nprofile: local\nruns: [a]\n"
        f"overrides: {{train.max_steps: 40, train.checkpoint_every_steps: 5, arch.hidden_size: 32, "
        f"eval.max_batches: 1, log.progress: false, data.data_paths: [{DATA}]}}\n"
    )
    run = load_sweep(spec, runs_root=tmp_path / "runs").run("a")
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.yaml").write_text(to_yaml(run.config))
    executor = make_executor(LOCAL, tmp_path / "logs", Resources(cpus_per_task=1, time="10"), REPO, "s.a")
    job = executor.submit(TrainJob(run.run_dir))
    wait_for("a checkpoint", lambda: any((run.run_dir / "checkpoints").glob("*/COMPLETE")), timeout=180)
    cancel_jobs(LOCAL, [job.job_id])
    with pytest.raises(Exception):  # noqa: B017 - submitit reports a job that ended without a result
        job.result()
    status = read_status(run.run_dir)
    assert status["state"] == "cancelled" and status["attempts"] == 1 and status["exit_code"] == 143, status
    assert status["message"].startswith("cancelled at step ")
    stopped_at = json.loads((run.run_dir / "summary.json").read_text())["step"]
    assert 0 < stopped_at < 40
    job = executor.submit(TrainJob(run.run_dir))
    assert job.result() == 0
    status = read_status(run.run_dir)
    assert status["state"] == "done" and status["attempts"] == 2 and status["preemptions"] == 0, status
    assert "resumed from" in (run.run_dir / "train.log").read_text()
    assert json.loads((run.run_dir / "summary.json").read_text())["step"] == 40
