"""Against a real local SLURM (tests/slurm_cluster.py): submission, arrays, refusals, cancel, and
real training runs that finish, get preempted and resume, and run on two gloo ranks."""

from __future__ import annotations

import json
import operator
import subprocess
import textwrap
import time
from pathlib import Path

import hpc_fixtures
import pytest
import submitit
from hpc_fixtures import REPO, has_checkpoint, wait_for
from slurm_cluster import LocalSlurm

from trm.hpc.backends import make_executor
from trm.hpc.profile import load_profile
from trm.hpc.scheduler import cancel_jobs, job_states
from trm.hpc.spec import Resources, load_sweep
from trm.hpc.submit import SubmitError, submit_sweep
from trm.rundir import read_status

slurm_cluster = hpc_fixtures.slurm_cluster  # the fixture, shared with the other modules

pytestmark = pytest.mark.slurm
DATA = REPO / "data" / "sudoku-4x4"
TINY = (
    "{train.max_steps: %d, arch.hidden_size: 32, eval.max_batches: 1, log.progress: false, "
    "train.checkpoint_every_steps: %d, data.data_paths: [%s]}"
)


def write_profile(tmp_path: Path, **extra: object) -> Path:
    lines = [
        "scheduler: slurm",
        "queue: debug",
        "venv: ''",
        "signal_delay_s: 30",
        "array_limit: 2",
        "max_num_timeout: 1",
        *(f"{k}: {json.dumps(v)}" for k, v in extra.items()),
    ]
    path = tmp_path / "slurm-test.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_spec(
    tmp_path: Path,
    runs: str,
    steps: int = 10,
    every: int = 0,
    resources: str = "{time: 10}",
    name: str = "tiny",
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: {name}
        config: {REPO / "trm/configs/quickstart.yaml"}
        overrides: {TINY % (steps, every, DATA)}
        profile: {write_profile(tmp_path)}
        resources: {resources}
        runs: {runs}
        """)
    )
    return path


@pytest.fixture(scope="module")
def dataset(repo_sudoku4: Path) -> Path:
    return repo_sudoku4


def test_rendered_script_runs_arrays_and_chunks(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    prof = load_profile(write_profile(tmp_path), REPO)
    ex = make_executor(prof, tmp_path / "logs", Resources(cpus_per_task=1, mem_gb=0.5, time="5"), REPO, "adds")
    job = ex.submit(operator.add, 2, 3)  # pickled by reference: importable on the node
    assert job.result() == 5
    script = job.paths.submission_file.read_text()
    assert "rendered from templates/slurm.sh.j2" in script and "#SBATCH --signal=USR2@30" in script
    with ex.batch():
        jobs = [ex.submit(operator.add, i, 10) for i in range(3)]
    assert [j.result() for j in jobs] == [10, 11, 12]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1 and jobs[2].job_id.endswith("_2")
    assert "#SBATCH --array=0-2%3" in jobs[0].paths.submission_file.read_text()
    ids = [job.job_id, *(j.job_id for j in jobs)]
    # Just after a job ends squeue has forgotten it and slurmdbd may not have recorded it yet ("GONE").
    wait_for("sacct to record the jobs", lambda: set(job_states(prof, ids).values()) == {"COMPLETED"}, timeout=30)


def test_refused_partition_is_shown_verbatim_and_nothing_is_left(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path
) -> None:
    spec = write_spec(tmp_path, "[a, b]", resources="{time: 10, queue: nosuchpartition}")
    sweep = load_sweep(spec, runs_root=tmp_path / "runs")
    with pytest.raises(SubmitError) as err:
        submit_sweep(sweep, say=lambda _: None)
    text = str(err.value)
    assert "refused run(s) a, b" in text and "invalid partition" in text.lower()
    assert "Already submitted: none" in text
    assert not (tmp_path / "runs" / "tiny" / "a").exists() and not (tmp_path / "runs" / "tiny" / "b").exists()
    assert not list((tmp_path / "runs").rglob("*.pkl")), list((tmp_path / "runs").rglob("*"))  # no orphans
    with pytest.raises(SubmitError, match="refused run\\(s\\) a:"):
        submit_sweep(sweep, array=False, say=lambda _: None)  # one job per run: submitit's own pickle path
    assert not list((tmp_path / "runs").rglob("*.pkl")), list((tmp_path / "runs").rglob("*"))


def test_missing_dataset_and_existing_runs_are_refused(slurm_cluster: LocalSlurm, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "[a]")
    spec.write_text(spec.read_text().replace(str(DATA), str(tmp_path / "no-data")))
    sweep = load_sweep(spec, runs_root=tmp_path / "runs")
    with pytest.raises(SubmitError, match=r"dataset\(s\) not found: .*no-data \(runs a\).*Nothing was submitted"):
        submit_sweep(sweep, say=lambda _: None)
    (tmp_path / "runs" / "tiny" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "a" / "summary.json").write_text("{}")
    with pytest.raises(SubmitError, match="1 run\\(s\\) already exist.*: a. Nothing was submitted"):
        submit_sweep(sweep, data_check=False, say=lambda _: None)
    result = submit_sweep(sweep, existing="skip", say=lambda _: None)
    assert result.submitted == {} and "a" in result.skipped
    assert (tmp_path / "runs" / "tiny" / "a" / "summary.json").read_text() == "{}"


@pytest.mark.slow
def test_two_run_sweep_as_array_finishes_with_summaries(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path
) -> None:
    sweep = load_sweep(write_spec(tmp_path, "[a, b]"), runs_root=tmp_path / "runs")
    result = submit_sweep(sweep, say=lambda _: None)
    assert set(result.submitted) == {"a", "b"}
    assert result.submitted["a"].split("_")[0] == result.submitted["b"].split("_")[0]  # one array job
    for run in sweep.runs:
        wait_for(
            f"{run.name} done",
            lambda r=run: read_status(r.run_dir).get("state") in ("done", "failed"),
            timeout=240,
        )
        status = read_status(run.run_dir)
        assert status["state"] == "done", status
        summary = json.loads((run.run_dir / "summary.json").read_text())
        assert summary["state"] == "done" and summary["step"] == 10
        assert status["job_ids"] == [result.submitted[run.name]] and status["attempts"] == 1
    # a second submit never clobbers: refused, then skipped as done with --resume
    with pytest.raises(SubmitError, match="already exist"):
        submit_sweep(sweep, say=lambda _: None)
    assert set(submit_sweep(sweep, existing="resume", say=lambda _: None).skipped.values()) == {"done"}


def _weights(run_dir: Path) -> dict:
    import torch

    ckpts = sorted(p for p in (run_dir / "checkpoints").iterdir() if (p / "COMPLETE").exists())
    return torch.load(ckpts[-1] / "state.pt", map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
def test_preempted_job_requeues_resumes_and_matches_uninterrupted(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path
) -> None:
    import torch

    sweep = load_sweep(write_spec(tmp_path, "[straight, preempted]", steps=60, every=5), runs_root=tmp_path / "runs")
    result = submit_sweep(sweep, array=False, say=lambda _: None)
    victim = sweep.run("preempted")
    job_id = result.submitted["preempted"]

    wait_for("a first checkpoint", lambda: has_checkpoint(victim.run_dir), timeout=180, every=0.2)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # what --signal=USR2@N sends
    wait_for("the requeue", lambda: read_status(victim.run_dir).get("preemptions", 0) >= 1, timeout=120)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], capture_output=True)
    for run in sweep.runs:
        wait_for(
            f"{run.name} done",
            lambda r=run: read_status(r.run_dir).get("state") in ("done", "failed"),
            timeout=300,
        )
    status = read_status(victim.run_dir)
    assert status["state"] == "done" and status["preemptions"] == 1 and status["attempts"] == 2, status
    assert status["job_ids"] == [job_id]  # requeued under the same job id
    assert "resumed from" in (victim.run_dir / "train.log").read_text()
    a, b = _weights(sweep.run("straight").run_dir), _weights(victim.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_gloo_ranks_through_submitit_tasks(slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path) -> None:
    sweep = load_sweep(
        write_spec(tmp_path, "[ddp]", resources="{time: 10, tasks_per_node: 2, cpus_per_task: 1}"),
        runs_root=tmp_path / "runs",
    )
    submit_sweep(sweep, say=lambda _: None)
    run = sweep.run("ddp")
    wait_for("the 2-rank run", lambda: read_status(run.run_dir).get("state") in ("done", "failed"), timeout=300)
    assert read_status(run.run_dir)["state"] == "done", read_status(run.run_dir)
    assert json.loads((run.run_dir / "summary.json").read_text())["world_size"] == 2


def test_cancelled_job_is_seen_as_finished(slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path) -> None:
    prof = load_profile(write_profile(tmp_path), REPO)
    ex = make_executor(prof, tmp_path / "logs", Resources(cpus_per_task=1, mem_gb=0.5, time="5"), REPO, "sleeper")
    job = ex.submit(time.sleep, 120)
    wait_for("the job to run", lambda: job_states(prof, [job.job_id]).get(job.job_id) == "RUNNING", timeout=60)
    cancel_jobs(prof, [job.job_id])
    wait_for("CANCELLED", lambda: job_states(prof, [job.job_id]).get(job.job_id) == "CANCELLED", timeout=60)
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()


def _tool(name: str):  # noqa: ANN202
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"trm_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_jobs_txt_goes_out_and_its_lines_are_marked(slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path) -> None:
    jobs = tmp_path / "jobs.txt"
    cmd = f"python tools/train.py {REPO / 'trm/configs/quickstart.yaml'} data_paths=[{DATA}] train.max_steps=3"
    jobs.write_text(f"# two lines\n[ ] {cmd} run.name=one\n[x] {cmd} run.name=old\n[ ] {cmd} run.name=two\n")
    argv = [
        str(jobs),
        "--profile",
        str(write_profile(tmp_path)),
        "--runs-root",
        str(tmp_path / "runs"),
        "--time",
        "10",
        "--cpus",
        "1",
        "--mem-gb",
        "1",
    ]
    assert _tool("submit").main(argv) == 0
    lines = jobs.read_text().splitlines()
    assert lines[1].startswith("[-] ") and lines[1].endswith("_0]") and "[slurm:" in lines[1]
    assert lines[2].startswith("[x] ") and lines[3].startswith("[-] ") and "[slurm:" in lines[3]
    for name in ("one", "two"):
        assert read_status(tmp_path / "runs" / "jobs" / name)["state"] in ("pending", "running", "done")
    assert _tool("submit").main(argv) == 0  # nothing pending any more: nothing submitted twice
    cancel_jobs(load_profile(write_profile(tmp_path), REPO), [line.rsplit(":", 1)[1][:-1] for line in lines[1::2]])


def test_cancel_one_run_then_resume_it(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, "[a, b]", steps=100000)
    base = [str(spec), "--runs-root", str(tmp_path / "runs")]
    submit, status = _tool("submit"), _tool("status")
    assert submit.main(base) == 0
    sweep = load_sweep(spec, runs_root=tmp_path / "runs")
    a, b = sweep.run("a").run_dir, sweep.run("b").run_dir
    first = read_status(a)["job_ids"][0]
    assert submit.main([*base, "--cancel", "--run", "a"]) == 0
    assert read_status(a)["state"] == "cancelled" and read_status(b)["state"] in ("pending", "running")
    # cancelled while pending, an array element vanishes from sacct: GONE
    wait_for(
        "a cancelled",
        lambda: job_states(sweep.profile, [first]).get(first) in ("CANCELLED", "GONE"),
        timeout=60,
    )
    capsys.readouterr()
    assert status.main([*base, "--json"]) == 0
    rows = {r["run"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["a"]["state"] == "cancelled" and rows["b"]["state"] in ("pending", "running")
    assert submit.main(base) == 2  # both exist: refused, nothing clobbered
    assert submit.main([*base, "--resume"]) == 0  # a goes out again, b is left alone
    assert "skip b: " in capsys.readouterr().out
    assert len(read_status(a)["job_ids"]) == 2 and read_status(a)["state"] in ("pending", "running")
    assert len(read_status(b)["job_ids"]) == 1
    assert submit.main([*base, "--cancel"]) == 0
    assert {read_status(a)["state"], read_status(b)["state"]} == {"cancelled"}


def _tool_json(tool, argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:  # noqa: ANN001
    capsys.readouterr()
    assert tool.main([*argv, "--json"]) == 0
    return {r["run"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}


@pytest.mark.slow
def test_scancel_cancels_keeps_the_checkpoint_and_resume_continues(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain `scancel JOBID` (TERM, then KILL) ends the job: cancelled, not requeued; the TERM
    checkpoint is kept and `tools/submit.py SPEC --resume` continues from it."""
    spec = write_spec(tmp_path, "[a]", steps=60, every=5)
    base = [str(spec), "--runs-root", str(tmp_path / "runs")]
    assert _tool("submit").main(base) == 0
    sweep = load_sweep(spec, runs_root=tmp_path / "runs")
    run = sweep.run("a")
    job_id = read_status(run.run_dir)["job_ids"][0]
    wait_for("a first checkpoint", lambda: has_checkpoint(run.run_dir), timeout=180, every=0.2)
    subprocess.run(["scancel", job_id], check=True)
    wait_for("cancelled", lambda: read_status(run.run_dir).get("state") == "cancelled", timeout=120)
    wait_for("sacct CANCELLED", lambda: job_states(sweep.profile, [job_id])[job_id] == "CANCELLED", timeout=60)
    time.sleep(15)  # longer than the requeue delay (cred_expire=10): a requeued job would be back by now
    status = read_status(run.run_dir)
    assert status["state"] == "cancelled" and status["attempts"] == 1 and status["preemptions"] == 0, status
    assert status["message"].startswith("cancelled at step ") and "--resume" in status["message"], status
    assert job_states(sweep.profile, [job_id])[job_id] == "CANCELLED"
    stopped_at = json.loads((run.run_dir / "summary.json").read_text())["step"]
    assert 0 < stopped_at < 60 and has_checkpoint(run.run_dir)
    row = _tool_json(_tool("status"), base, capsys)["a"]
    assert row["state"] == "cancelled" and row["message"].startswith("cancelled at step")

    assert _tool("submit").main([*base, "--resume"]) == 0
    wait_for("done", lambda: read_status(run.run_dir).get("state") in ("done", "failed"), timeout=300)
    status = read_status(run.run_dir)
    assert status["state"] == "done" and status["attempts"] == 2 and len(status["job_ids"]) == 2, status
    assert status["message"] == "" and status["preemptions"] == 0
    assert f"at step {stopped_at}" in (run.run_dir / "train.log").read_text().split("resumed from")[1]
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert (summary["step"], summary["total_steps"]) == (60, 60)


@pytest.mark.slow
def test_slurm_preemption_by_requeue_resumes_from_the_term_checkpoint(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SLURM's own preemption (PreemptMode=REQUEUE: SIGCONT + SIGTERM, then the controller requeues
    the job) is a preemption, not a cancel: the restart resumes from the TERM checkpoint."""
    from slurm_cluster import URGENT_PARTITION

    spec = write_spec(tmp_path, "[victim]", steps=60, every=5, resources="{time: 10, cpus_per_task: 2}")
    base = [str(spec), "--runs-root", str(tmp_path / "runs")]
    assert _tool("submit").main(base) == 0
    sweep = load_sweep(spec, runs_root=tmp_path / "runs")
    run = sweep.run("victim")
    job_id = read_status(run.run_dir)["job_ids"][0]
    wait_for("a first checkpoint", lambda: has_checkpoint(run.run_dir), timeout=180, every=0.2)
    # A job of the higher-priority partition that needs the whole node preempts the run.
    urgent = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--partition={URGENT_PARTITION}",
            f"--cpus-per-task={slurm_cluster.ncpus}",
            "--mem=1G",
            "--output=/dev/null",
            "--wrap",
            "sleep 3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    wait_for("the preemption", lambda: read_status(run.run_dir).get("preemptions", 0) >= 1, timeout=120)
    wait_for("running again", lambda: read_status(run.run_dir).get("attempts", 0) >= 2, timeout=180)
    row = _tool_json(_tool("status"), base, capsys)["victim"]
    assert row["state"] in ("running", "done") and row["preemptions"] == 1, row
    wait_for("done", lambda: read_status(run.run_dir).get("state") in ("done", "failed", "cancelled"), timeout=300)
    status = read_status(run.run_dir)
    assert status["state"] == "done" and status["preemptions"] == 1 and status["attempts"] == 2, status
    assert status["job_ids"] == [job_id]  # the controller requeued the same job
    log = (run.run_dir / "train.log").read_text()
    assert "signal SIGTERM" in log and "resumed from" in log
    assert job_states(sweep.profile, [urgent])[urgent] in ("COMPLETED", "GONE")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["slurm", "local"])
def test_grid_sweep_trains_and_both_summaries_read_back(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path, backend: str
) -> None:
    """Grid run names hold `=` and `,` (`L_layers=1,L_cycles=2`): the node must take the run's
    config path for the config, not for a key=value override (issue 9)."""
    from trm.hpc.collect import collect

    spec = write_spec(tmp_path, "[]", steps=4)
    spec.write_text(spec.read_text().replace("runs: []", "grid: {arch.L_layers: [1], arch.L_cycles: [1, 2]}"))
    sweep = load_sweep(spec, runs_root=tmp_path / "runs", profile=None if backend == "slurm" else "local")
    assert [r.name for r in sweep.runs] == ["L_layers=1,L_cycles=1", "L_layers=1,L_cycles=2"]
    submit_sweep(sweep, say=lambda _: None)
    for run in sweep.runs:
        wait_for(
            f"{run.name} to end", lambda r=run: read_status(r.run_dir).get("state") in ("done", "failed"), timeout=300
        )
        assert read_status(run.run_dir)["state"] == "done", read_status(run.run_dir)
        summary = json.loads((run.run_dir / "summary.json").read_text())
        assert summary["run_name"] == run.name and summary["step"] == summary["total_steps"] == 4
    (result,) = collect([tmp_path / "runs" / "tiny"])
    assert {r.name: r.state for r in result.rows} == {r.name: "done" for r in sweep.runs}
    assert all("eval/exact_accuracy" in r.final for r in result.rows)


@pytest.mark.slow
def test_jobs_txt_any_command_on_slurm_lines_end_marked_and_status_reads_tags(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """tools/submit.py jobs.txt takes any command line: a training keeps its run handling, other
    commands run as plain jobs; `[slurm:ID]` tags are read back by tools/status.py, and the lines
    become [x] / [!] when their jobs end."""
    jobs = tmp_path / "jobs.txt"
    train = f"python tools/train.py {REPO / 'trm/configs/quickstart.yaml'} data_paths=[{DATA}] train.max_steps=3"
    jobs.write_text(
        f"[ ] {train} arch.hidden_size=32 run.name=one\n"
        "[ ] echo made > made.txt && test -s made.txt\n"
        "[ ] echo about to fail; exit 3\n"
    )
    profile = str(write_profile(tmp_path))
    runs = str(tmp_path / "runs")
    argv = [str(jobs), "--profile", profile, "--runs-root", runs, "--time", "10", "--cpus", "1", "--mem-gb", "1"]
    assert _tool("submit").main(argv) == 0
    printed = capsys.readouterr().out
    assert f"status: python tools/status.py {jobs} --profile {profile} --runs-root {runs}" in printed
    assert all(line.startswith("[-] ") and "[slurm:" in line for line in jobs.read_text().splitlines())
    status_argv = [str(jobs), "--profile", profile, "--runs-root", runs]
    rows = _tool_json(_tool("status"), status_argv, capsys)
    assert set(rows) == {"one", *(r for r in rows if r.startswith("cmd-"))} and len(rows) == 3

    def ended() -> bool:
        _tool("status").main(status_argv)  # settles lines of jobs that ended without marking them
        return not any(line.startswith("[-]") for line in jobs.read_text().splitlines())

    wait_for("every line to end", ended, timeout=300, every=2)
    lines = jobs.read_text().splitlines()
    assert lines[0] == f"[x] {train} arch.hidden_size=32 run.name=one", lines
    assert lines[1] == "[x] echo made > made.txt && test -s made.txt" and (tmp_path / "made.txt").exists()
    assert lines[2] == "[!] echo about to fail; exit 3 [exit 3]", lines
    rows = _tool_json(_tool("status"), status_argv, capsys)
    assert rows["one"]["state"] == "done" and rows["one"]["step"] == 3
    failed = next(r for r in rows.values() if r["state"] == "failed")
    assert failed["message"].startswith("failed: command exited with code 3; log: ")
    assert Path(failed["message"].split("log: ")[1]).exists()


@pytest.mark.slow
def test_time_limit_requeues_within_the_budget_and_counts_the_time_outs(
    slurm_cluster: LocalSlurm, tmp_path: Path, dataset: Path
) -> None:
    """A real 1-minute limit with max_num_timeout 1 (the test profile): requeued once, then stopped
    with a message that counts both time-outs; the run keeps its checkpoint."""
    spec = write_spec(tmp_path, "[slow]", steps=1000000, every=0, resources="{time: 1, cpus_per_task: 1}")
    sweep = load_sweep(spec, runs_root=tmp_path / "runs")
    job_id = submit_sweep(sweep, say=lambda _: None).submitted["slow"]
    run = sweep.run("slow")
    wait_for(
        "the end",
        lambda: read_status(run.run_dir).get("state") in ("failed", "done", "cancelled"),
        timeout=400,
        every=1,
    )
    status = read_status(run.run_dir)
    assert status["state"] == "failed" and status["timeouts"] == 2 and status["attempts"] == 2, status
    assert status["message"].startswith("timed out at step ") and "2 time-out(s)" in status["message"], status
    assert status["job_ids"] == [job_id] and status["preemptions"] == 0
    assert has_checkpoint(run.run_dir)
