"""The LSF submitit plugin.

Part 1 (no cluster): LSF's output formats, state mapping, job references, the job environment
from LSB_* variables, plugin discovery through the `submitit` entry points.
Part 2 ("LSF emulation"): bsub/bjobs/bkill/brequeue shims (tests/lsf_shims/) that run the rendered
LSF script for real on the local SLURM cluster and answer in LSF's formats, so submission, arrays,
status, suspension, purged ids, cancel and the requeue path run end to end. The shims imitate LSF;
behaviour of a real LSF beyond its documented formats is not proven by them.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hpc_fixtures
import pytest
import submitit
from hpc_fixtures import REPO, has_checkpoint, wait_for

from trm.hpc.backends.lsf import LsfExecutor, LsfInfoWatcher, LsfJob, LsfJobEnvironment, lsf_job_ref
from trm.hpc.profile import load_profile
from trm.hpc.scheduler import job_states
from trm.hpc.spec import load_sweep
from trm.hpc.submit import SubmitError, submit_sweep
from trm.rundir import read_status

lsf_plugin = hpc_fixtures.lsf_plugin  # the fixture, shared with the other modules
lsf_shims = hpc_fixtures.lsf_shims  # the fixture, shared with the other modules
slurm_cluster = hpc_fixtures.slurm_cluster  # the fixture, shared with the other modules

DATA = REPO / "data" / "sudoku-4x4"

BJOBS = """\
101|0|PEND|-
102|0|RUN|-
103|0|SSUSP|-
104|0|USUSP|-
105|0|PSUSP|-
106|0|DONE|-
107|0|EXIT|75
108|1|DONE|-
108|2|RUN|-
108|3|EXIT|1
109|0|UNKWN|-
"""


def test_bjobs_rows_map_to_submitit_states() -> None:
    info = LsfInfoWatcher().read_info(BJOBS)
    states = {k: v["State"] for k, v in info.items()}
    assert states == {
        "101": "PENDING",
        "102": "RUNNING",
        "103": "SUSPENDED",
        "104": "SUSPENDED",
        "105": "SUSPENDED",
        "106": "COMPLETED",
        "107": "FAILED",
        "108_1": "COMPLETED",
        "108_2": "RUNNING",
        "108_3": "FAILED",
        "109": "UNKNOWN",
    }
    assert info["107"]["ExitCode"] == "75" and info["103"]["LsfState"] == "SSUSP"
    watcher = LsfInfoWatcher()
    watcher._info_dict.update(info)
    alive = [j for j in info if not watcher.is_done(j, mode="cache")]
    assert alive == ["101", "102", "103", "104", "105", "108_2", "109"]  # suspended jobs are alive


def test_submission_output_and_job_references() -> None:
    noisy = "<<Waiting for dispatch ...>>\nJob <4711> is submitted to queue <gpuv100>.\n"
    assert LsfExecutor._get_job_id_from_submission_command(noisy) == "4711"
    assert LsfExecutor._get_job_id_from_submission_command(b"Job <12> is submitted to default queue <normal>.") == "12"
    with pytest.raises(submitit.core.utils.FailedSubmissionError):
        LsfExecutor._get_job_id_from_submission_command("gpux: No such queue. Job not submitted.")
    assert lsf_job_ref("4711") == "4711" and lsf_job_ref("4711_3") == "4711[3]"


def test_job_environment_from_lsb_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "lsf")
    monkeypatch.setenv("LSB_JOBID", "4711")
    monkeypatch.setenv("LSB_JOBINDEX", "0")
    monkeypatch.setenv("LSB_HOSTS", "n-62-20-1 n-62-20-1 n-62-20-1 n-62-20-1")
    monkeypatch.setenv("TRM_LSF_NTASKS", "2")
    monkeypatch.setenv("TRM_LSF_LOCAL_RANK", "1")
    env = LsfJobEnvironment()
    assert env.activated() and env.job_id == "4711" and env.array_task_id is None
    assert (env.num_tasks, env.global_rank, env.local_rank, env.num_nodes) == (2, 1, 1, 1)
    assert env.hostnames == ["n-62-20-1"]
    monkeypatch.setenv("LSB_JOBINDEX", "3")
    monkeypatch.delenv("LSB_HOSTS")
    monkeypatch.setenv("LSB_MCPU_HOSTS", "hostA 4 hostB 4")
    assert env.job_id == "4711_3" and env.hostnames == ["hostA", "hostB"]


def test_plugin_is_found_through_entry_points(lsf_plugin: None, tmp_path: Path) -> None:
    """In a fresh interpreter (as on a node), submitit discovers the executor and the environment."""
    code = textwrap.dedent("""
        import os, submitit
        from submitit.core import plugins
        print(sorted(plugins.get_executors()))
        os.environ.update(SUBMITIT_EXECUTOR="lsf", LSB_JOBID="5", TRM_LSF_NTASKS="1")
        print(type(submitit.JobEnvironment()).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert "lsf" in out[0] and out[1] == "LsfJobEnvironment"


# ---------------------------------------------------------------------------------------------- LSF emulation


def _profile(tmp_path: Path, **extra: object) -> Path:
    lines = [
        "scheduler: lsf",
        "queue: gpuv100",
        "queues: [gpuv100, gpua100, hpc, nosuchqueue]",
        "venv: ''",
        "signal_delay_s: 60",
        "max_num_timeout: 1",
        "array_limit: 2",
        *(f"{k}: {json.dumps(v)}" for k, v in extra.items()),
    ]
    path = tmp_path / "lsf-test.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _executor(tmp_path: Path) -> LsfExecutor:
    ex = LsfExecutor(tmp_path / "logs", profile=load_profile(_profile(tmp_path), REPO), repo_root=REPO)
    ex.update_parameters(job_name="adds", time=5, mem_gb=1)
    return ex


@pytest.mark.slurm
def test_bsub_job_and_array_run_through_the_shims(lsf_shims: Path, tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    job = ex.submit(operator.add, 2, 3)
    assert isinstance(job, LsfJob) and job.result() == 5
    script = job.paths.submission_file.read_text()
    assert "#BSUB -J adds" in script and "#BSUB -Q 75" in script and "#BSUB -wa USR2" in script
    with ex.batch():
        jobs = [ex.submit(operator.add, i, 100) for i in range(3)]
    assert [j.job_id.split("_")[1] for j in jobs] == ["1", "2", "3"]  # LSF arrays count from 1
    assert [j.result() for j in jobs] == [100, 101, 102]
    assert '#BSUB -J "adds[1-3]%3"' in jobs[0].paths.submission_file.read_text()
    base = jobs[0].job_id.split("_")[0]

    def rows() -> list[str]:  # the emulation reads sacct, which lags a second or two behind
        return subprocess.run(
            ["bjobs", "-o", "jobid jobindex stat exit_code delimiter='|'", "-noheader", base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()

    wait_for("the array's rows", lambda: rows() == [f"{base}|{i}|DONE|-" for i in (1, 2, 3)], timeout=30)


@pytest.mark.slurm
@pytest.mark.slow
def test_suspended_purged_and_killed_jobs(lsf_shims: Path, tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    job = ex.submit(time.sleep, 60)
    watcher = LsfJob.watcher
    wait_for(
        "RUN",
        lambda: (watcher.update() or True) and watcher.get_state(job.job_id, "cache") == "RUNNING",
        timeout=60,
    )
    subprocess.run(["scontrol", "suspend", job.job_id], check=True)  # what LSF preemption does by default
    watcher.register_job("999999")  # an id LSF purged long ago
    watcher.update()
    assert watcher.get_info(job.job_id, "cache")["LsfState"] == "SSUSP"
    assert not watcher.is_done(job.job_id, mode="cache")  # suspended is alive
    assert watcher.get_state("999999", "cache") == "PURGED" and watcher.is_done("999999", mode="cache")
    proc = subprocess.run(
        ["bjobs", "-o", "jobid stat", "-noheader", job.job_id, "999999"], capture_output=True, text=True
    )
    assert proc.returncode == 255 and proc.stdout.strip() == f"{job.job_id} SSUSP"
    assert proc.stderr.strip() == "Job <999999> is not found"
    subprocess.run(["scontrol", "resume", job.job_id], check=True)
    out = subprocess.run(["bkill", job.job_id], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"Job <{job.job_id}> is being terminated"
    wait_for("EXIT", lambda: job.done(force_check=True), timeout=60)
    assert job.state == "FAILED"
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()
    missing = subprocess.run(["bkill", "999999"], capture_output=True, text=True)
    assert missing.returncode != 0 and "No matching job found" in missing.stderr


def _spec(tmp_path: Path, runs: str, steps: int, every: int, resources: str = "{time: 10}", **profile: object) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: tiny
        config: {REPO / "trm/configs/quickstart.yaml"}
        overrides: {{train.max_steps: {steps}, arch.hidden_size: 32, eval.max_batches: 1, log.progress: false,
                    train.checkpoint_every_steps: {every}, data.data_paths: [{DATA}]}}
        profile: {_profile(tmp_path, **profile)}
        resources: {resources}
        runs: {runs}
        """)
    )
    return path


@pytest.mark.slurm
def test_unknown_queue_is_refused_verbatim(lsf_shims: Path, tmp_path: Path) -> None:
    sweep = load_sweep(_spec(tmp_path, "[a]", 5, 0, "{time: 10, queue: nosuchqueue}"), runs_root=tmp_path / "runs")
    with pytest.raises(SubmitError, match=r"refused run\(s\) a:\n.*nosuchqueue: No such queue. Job not submitted."):
        submit_sweep(sweep, data_check=False, say=lambda _: None)
    assert not (tmp_path / "runs" / "tiny" / "a").exists()


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("requeue", ["exit_code", "brequeue"])
def test_warning_signal_checkpoints_requeues_and_resumes(
    lsf_shims: Path, tmp_path: Path, requeue: str, repo_sudoku4: Path
) -> None:
    sweep = load_sweep(_spec(tmp_path, "[a]", 60, 5, lsf_requeue=requeue), runs_root=tmp_path / "runs")
    job_id = submit_sweep(sweep, say=lambda _: None).submitted["a"]
    run = sweep.run("a")
    wait_for("a first checkpoint", lambda: has_checkpoint(run.run_dir), timeout=180, every=0.2)
    out = subprocess.run(["bkill", "-s", "USR2", job_id], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"Job <{job_id}> is being signaled"
    wait_for("the requeue", lambda: read_status(run.run_dir).get("preemptions", 0) >= 1, timeout=120)
    wait_for("done", lambda: read_status(run.run_dir).get("state") in ("done", "failed"), timeout=300)
    status = read_status(run.run_dir)
    assert status["state"] == "done" and status["attempts"] == 2 and status["job_ids"] == [job_id], status
    assert "resumed from" in (run.run_dir / "train.log").read_text()
    assert json.loads((run.run_dir / "summary.json").read_text())["step"] == 60
    wait_for("bjobs to say DONE", lambda: job_states(sweep.profile, [job_id]) == {job_id: "COMPLETED"}, timeout=60)
    assert os.environ.get("SUBMITIT_EXECUTOR") is None  # nothing leaked into the test process


@pytest.mark.slurm
@pytest.mark.slow
def test_two_ranks_in_one_lsf_job(lsf_shims: Path, tmp_path: Path, repo_sudoku4: Path) -> None:
    """The LSF script starts one process per rank; ranks and the master host come from its variables."""
    sweep = load_sweep(
        _spec(tmp_path, "[ddp]", 10, 0, "{time: 10, tasks_per_node: 2, cpus_per_task: 1}"),
        runs_root=tmp_path / "runs",
    )
    job_id = submit_sweep(sweep, say=lambda _: None).submitted["ddp"]
    run = sweep.run("ddp")
    wait_for("the 2-rank run", lambda: read_status(run.run_dir).get("state") in ("done", "failed"), timeout=300)
    assert read_status(run.run_dir)["state"] == "done", read_status(run.run_dir)
    assert json.loads((run.run_dir / "summary.json").read_text())["world_size"] == 2
    logs = tmp_path / "runs" / "tiny" / "logs"
    assert (logs / f"{job_id}_0_log.out").exists() and (logs / f"{job_id}_1_log.out").exists()  # submitit's names


@pytest.mark.slurm
@pytest.mark.slow
def test_bkill_cancels_keeps_the_checkpoint_and_is_not_requeued(
    lsf_shims: Path, tmp_path: Path, repo_sudoku4: Path
) -> None:
    """bkill (TERM, then KILL) is a cancel on LSF too: the trainer checkpoints, exits 143, which `-Q 75`
    does not requeue; status.json says cancelled with the step, and the job ends EXIT."""
    sweep = load_sweep(_spec(tmp_path, "[a]", 60, 5), runs_root=tmp_path / "runs")
    job_id = submit_sweep(sweep, say=lambda _: None).submitted["a"]
    run = sweep.run("a")
    wait_for("a first checkpoint", lambda: has_checkpoint(run.run_dir), timeout=180, every=0.2)
    out = subprocess.run(["bkill", job_id], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"Job <{job_id}> is being terminated"
    wait_for("cancelled", lambda: read_status(run.run_dir).get("state") == "cancelled", timeout=120)
    wait_for("bjobs to say EXIT", lambda: job_states(sweep.profile, [job_id]) == {job_id: "FAILED"}, timeout=90)
    status = read_status(run.run_dir)
    assert status["attempts"] == 1 and status["preemptions"] == 0 and status["exit_code"] == 143, status
    assert status["message"].startswith("cancelled at step ") and has_checkpoint(run.run_dir)
    assert "signal SIGTERM" in (run.run_dir / "train.log").read_text()
