"""What users read: refusals at submit, the step denominator, why a run ended, the inputs
tools/status.py and tools/collect.py accept, dry runs that leave no trace, script headers."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from conftest import TINY, run_trainer

from trm.hpc.collect import main as collect_main
from trm.hpc.job import TrainJob
from trm.hpc.profile import load_profile
from trm.hpc.render import ScriptRequest, render_script
from trm.hpc.spec import Resources, SpecError, load_sweep
from trm.rundir import update_status

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"trm_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


submit_tool, status_tool = _tool("submit"), _tool("status")


def _spec(tmp_path: Path, overrides: str = "{}", profile: str = "local", name: str = "s") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: {name}
        config: {REPO / "trm/configs/quickstart.yaml"}
        overrides: {overrides}
        profile: {profile}
        runs: [a, {{name: b, overrides: {{eval.eval_interval: 3}}}}]
        """)
    )
    return path


def test_grid_run_config_path_is_not_an_override(tmp_path: Path) -> None:
    from trm.config import is_override

    run_dir = tmp_path / "runs" / "sweep" / "L_layers=1,L_cycles=2"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("arch: {L_layers: 1}\n")
    path = TrainJob(run_dir).argv()[0]
    assert not is_override(path) and not is_override(f"{tmp_path}/x/L_layers=1,L_cycles=2/config.yaml")
    assert is_override("arch.L_layers=2") and is_override("+run_name=x") and is_override("lr=1e-4")


def test_what_the_node_would_refuse_is_refused_at_submit_naming_run_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, "{epochs: 10, eval_interval: 5}")
    with pytest.raises(SpecError) as refused:
        load_sweep(spec, runs_root=tmp_path / "runs")
    text = str(refused.value)  # the node's own check (trm.config), whichever words it uses
    assert "run 'b'" in text and "eval.eval_interval" in text and "train.epochs (10)" in text
    for extra in (["--dry-run"], []):
        assert submit_tool.main([str(spec), "--runs-root", str(tmp_path / "runs"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "run 'b'" in err and "eval.eval_interval" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "dry-run").exists()


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--gpus", "-2"], "--gpus: gpus_per_node must be an integer >= 0, got -2"),
        (["--cpus", "0"], "--cpus: cpus_per_task must be an integer >= 1, got 0"),
        (["--mem-gb", "-5"], "--mem-gb: mem_gb must be a positive number of GB, got -5.0"),
        (["--mem-gb", "nan"], "--mem-gb: mem_gb must be a positive number of GB, got nan"),
        (["--queue", "gpuv1OO"], "--queue: queue 'gpuv1OO' is not one of the queues of profile dtu-lsf: gpuv100"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_command_line_resources_are_checked_like_a_specs(
    option: list[str],
    needle: str,
    dry_run: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("USER", "s123456")
    monkeypatch.chdir(tmp_path)
    argv = [
        str(REPO / "jobs/quickstart.yaml"),
        "--profile",
        str(REPO / "env/dtu-lsf.yaml"),
        "--runs-root",
        str(tmp_path / "runs"),
        *option,
        *(["--dry-run"] if dry_run else []),
    ]
    assert submit_tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing rendered, nothing submitted


def test_lsf_dry_run_without_user_says_so_and_with_it_creates_nothing_of_the_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [str(REPO / "jobs/quickstart.yaml"), "--profile", "env/dtu-lsf.yaml", "--dry-run"]
    monkeypatch.delenv("USER", raising=False)
    assert submit_tool.main(argv) == 2
    err = capsys.readouterr().err
    assert "uses $USER, which is not set in this shell" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
    fake_home = tmp_path / "work3"  # stands for /work3: must not appear on the submit host
    monkeypatch.setenv("USER", "s123456")
    profile = tmp_path / "p.yaml"
    profile.write_text((REPO / "env/dtu-lsf.yaml").read_text().replace("/work3/", f"{fake_home}/"))
    assert submit_tool.main([*argv[:2], str(profile), "--dry-run"]) == 0
    assert "dry-run/quickstart" in capsys.readouterr().out
    assert not fake_home.exists() and (tmp_path / "dry-run" / "quickstart").is_dir()


def test_single_run_script_header_has_no_empty_runs_line() -> None:
    prof = load_profile(REPO / "env/slurm-generic.yaml", REPO)
    text = render_script(ScriptRequest(prof, Resources(), "maze.baseline", Path("/logs"), "true", REPO))
    assert "# sweep: maze.baseline\n" in text and "runs:" not in text


def test_step_denominator_is_where_the_run_stops(tmp_path: Path, sudoku4: Path) -> None:
    args = [
        str(REPO / "trm/configs/quickstart.yaml"),
        f"data.data_paths=[{sudoku4}]",
        *TINY,
        "train.max_steps=7",
        f"run.root={tmp_path}",
        "run.name=r",
    ]
    proc = run_trainer(args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (summary["state"], summary["step"], summary["total_steps"]) == ("done", 7, 7)
    log = (tmp_path / "r" / "train.log").read_text()
    assert "7 steps of 16" in log and "train step       5/7 " in log


def _failed_run(root: Path) -> Path:
    run = root / "s" / "broken"
    log = root / "s" / "logs" / "7_0_log.err"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback ...\nValueError: boom\n")
    update_status(
        run,
        state="failed",
        add_job_id="7",
        add_log_path=str(log.with_suffix(".out")),
        exit_code=1,
        message=f"failed: ValueError: boom; log: {log}",
    )
    (run / "config.yaml").write_text((REPO / "trm/configs/quickstart.yaml").read_text())
    return run


def test_collector_row_of_a_failed_run_carries_the_failure(tmp_path: Path) -> None:
    from trm.hpc.collect import collect

    run = _failed_run(tmp_path)
    (result,) = collect([run.parent])
    row = result.row("broken")
    assert row.state == "failed"
    assert any(p.startswith("failed: ValueError: boom; log: ") for p in row.problems), row.problems
    assert not any("no summary.json" in p for p in row.problems)


def test_status_and_collect_take_a_spec_a_jobs_txt_a_sweep_folder_and_a_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    spec = _spec(tmp_path, "{epochs: 6, eval_interval: 3}")
    sweep = load_sweep(spec, runs_root=runs)
    for run in sweep.runs:
        update_status(
            run.run_dir,
            state="cancelled",
            add_job_id="1",
            scheduler="local",
            message="cancelled at step 3 (SIGTERM: scancel, bkill or a kill); checkpoint kept",
        )
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(f"[ ] python tools/train.py {REPO / 'trm/configs/quickstart.yaml'} run.name=j\n")
    update_status(runs / "jobs" / "j", state="done", add_job_id="2", scheduler="local")
    for target, names in (
        ([str(spec), "--runs-root", str(runs)], ["a", "b"]),
        ([str(jobs), "--runs-root", str(runs)], ["j"]),
        ([str(runs / "s")], ["a", "b"]),
        ([str(runs / "s" / "b")], ["b"]),
    ):
        capsys.readouterr()
        assert status_tool.main([*target, "--json"]) == 0, capsys.readouterr().err
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["run"] for r in rows] == names
        assert all(r["state"] in ("cancelled", "done") for r in rows)
        assert all(r["message"].startswith("cancelled at step 3") for r in rows if r["state"] == "cancelled")
        out = tmp_path / "results"
        assert collect_main([*target, "--out", str(out), "--no-plots", "--quiet"]) == 0, capsys.readouterr().err
    assert (tmp_path / "results" / "jobs.csv").exists() and (tmp_path / "results" / "s.csv").exists()


def test_batch_that_does_not_split_over_the_ranks_is_refused_at_submit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, "{global_batch_size: 10, epochs: 6, eval_interval: 3}")
    argv = [str(spec), "--runs-root", str(tmp_path / "runs"), "--gpus", "4"]
    for extra in (["--dry-run"], []):
        assert submit_tool.main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert "run a: train.global_batch_size (10) must be divisible by the job's 4 ranks" in err
    assert not (tmp_path / "runs").exists()


def test_collector_row_of_a_requeued_run_says_why(tmp_path: Path) -> None:
    from trm.hpc.collect import collect

    run = tmp_path / "s" / "r"
    update_status(
        run,
        state="requeued",
        add_job_id="7",
        preemptions=1,
        message="preempted at step 25 (the scheduler's SIGTERM; it requeues the job); checkpointed",
    )
    (result,) = collect([run.parent])
    assert result.row("r").problems == [read_message(run)]


def read_message(run: Path) -> str:
    return json.loads((run / "status.json").read_text())["message"]
