"""The shipped specs and jobs.txt, tools/submit.py --dry-run and its errors, the status table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from trm.hpc.jobs_file import jobs_sweep
from trm.hpc.profile import LOCAL
from trm.hpc.runstate import update_status
from trm.hpc.spec import Resources, load_sweep
from trm.hpc.status import format_table, sweep_rows

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "jobs").glob("*.yaml"))


def _tool(name: str) -> ModuleType:
    """tools/<name>.py loaded as a module (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"trm_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


status_tool, submit_tool = _tool("status"), _tool("submit")


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "s123456")  # the DTU profile's paths use $USER


def test_every_spec_is_shipped() -> None:
    names = {p.stem for p in SPECS}
    assert {
        "maze_ablations",
        "sudoku_ablations",
        "recursion_study",
        "recursion_study_quick",
        "quickstart",
    } <= names


@pytest.mark.parametrize("profile", [None, "env/dtu-lsf.yaml", "env/slurm-generic.yaml", "local"])
@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_specs_load_and_render(
    spec: Path, profile: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = load_sweep(spec, runs_root=tmp_path / "runs", profile=profile)
    assert sweep.runs and all(r.config.run.name == r.name for r in sweep.runs)
    out = tmp_path / "scripts"
    argv = [str(spec), "--dry-run", "--out", str(out), "--runs-root", str(tmp_path / "runs")]
    assert submit_tool.main(argv + (["--profile", profile] if profile else [])) == 0
    assert str(out) in capsys.readouterr().out
    scripts = sorted(out.iterdir())
    scheduler = sweep.profile.scheduler
    assert len(scripts) == (1 if scheduler != "local" and len(sweep.runs) > 1 else len(sweep.runs))
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert f"rendered from templates/{scheduler}.sh.j2" in script.read_text()
    assert not any((tmp_path / "runs" / sweep.name / r.name).exists() for r in sweep.runs)  # nothing submitted


def test_maze_ablations_are_the_seeds_five_runs(tmp_path: Path) -> None:
    sweep = load_sweep(REPO / "jobs/maze_ablations.yaml", runs_root=tmp_path)
    assert [r.name for r in sweep.runs] == ["baseline", "no_ema", "with_act_continue", "T2_n2", "4layers_n3"]
    base = sweep.run("baseline").config
    assert (base.train.epochs, base.train.global_batch_size, base.optim.lr) == (60000, 768, 1e-4)
    assert (base.eval.eval_interval, base.eval.min_eval_interval) == (10000, 4)
    assert (base.arch.H_cycles, base.arch.L_cycles, base.arch.L_layers) == (3, 6, 2) and base.train.ema
    assert sweep.run("no_ema").config.train.ema is False
    assert sweep.run("with_act_continue").config.arch.no_ACT_continue is False
    t2 = sweep.run("T2_n2").config.arch
    assert (t2.H_cycles, t2.L_cycles) == (2, 2)
    four = sweep.run("4layers_n3").config.arch
    assert (four.L_layers, four.L_cycles) == (4, 3)
    assert sweep.run("T2_n2").expected_delta == {"eval/exact_accuracy": -0.137}


def test_shipped_jobs_txt_lines_are_valid_train_commands(tmp_path: Path) -> None:
    sweep, lines = jobs_sweep(REPO / "jobs.txt", LOCAL, Resources(), runs_root=tmp_path)
    assert [r.name for r in sweep.runs] == ["quickstart_seed0", "quickstart_seed1", "quickstart_1layer"]
    assert sweep.run("quickstart_1layer").config.arch.L_layers == 1
    assert all(lines[r.name].state == "pending" for r in sweep.runs)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["jobs/nope.yaml"], "sweep spec"),
        (["jobs.txt"], "pass --profile"),
        (["jobs/maze_ablations.yaml", "--run", "zzz"], "no run named 'zzz'"),
        (
            ["jobs/maze_ablations.yaml", "--profile", "env/mars.yaml"],
            "profile 'env/mars.yaml' does not exist",
        ),
        (["jobs/maze_ablations.yaml", "--time", "24:00", "--dry-run"], "ambiguous"),
    ],
)
def test_submit_errors_are_one_paragraph(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert submit_tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


def _run_dir(sweep, name: str) -> Path:  # noqa: ANN001
    return sweep.run(name).run_dir


def test_status_table_reads_run_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = REPO / "jobs/maze_ablations.yaml"
    sweep = load_sweep(spec, runs_root=tmp_path, profile="local")
    done = _run_dir(sweep, "baseline")
    update_status(done, state="done", add_job_id="11", add_log_path="/logs/11_0_log.out", preemptions=2, attempts=3)
    (done / "summary.json").write_text(
        json.dumps(
            {
                "state": "done",
                "step": 65104,
                "total_steps": 65104,
                "epoch": 60000.0,
                "final": {"eval/exact_accuracy": 0.8612},
            }
        )
    )
    gone = _run_dir(sweep, "no_ema")  # status says running, but its (local) job is long gone
    update_status(gone, state="running", add_job_id="999999999", attempts=1)
    (gone / "summary.json").write_text(
        json.dumps(
            {
                "state": "running",
                "step": 100,
                "total_steps": 65104,
                "epoch": 92.2,
                "best": {"eval/exact_accuracy": {"value": 0.5}},
            }
        )
    )
    rows = {r.run: r for r in sweep_rows(sweep)}
    assert rows["baseline"].display_state == "done, preempted x2" and rows["baseline"].metric == 0.8612
    assert rows["no_ema"].state == "failed" and "ended as COMPLETED without finishing" in rows["no_ema"].message
    assert rows["no_ema"].metric == 0.5
    assert rows["T2_n2"].state == "not submitted"
    table = format_table(list(rows.values()), sweep.metric)
    assert "65104/65104" in table and "0.8612" in table and "/logs/11_0_log.out" in table
    assert status_tool.main([str(spec), "--runs-root", str(tmp_path), "--profile", "local", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["run"] for d in lines] == [r.name for r in sweep.runs] and lines[0]["job_ids"] == ["11"]


@pytest.mark.parametrize("profile", sorted((REPO / "env").glob("*.yaml")), ids=lambda p: p.stem)
def test_setup_sh_loads_the_modules_the_jobs_load(profile: Path) -> None:
    """setup.sh --profile parses `modules:` without Python (none is loaded yet); it must agree with
    the profile loader, or the venv is built with another Python than the jobs run."""
    import re

    from trm.hpc.profile import load_profile

    awk = re.search(r"mods=\$\(awk '(.*)' \"\$profile\"\)", (REPO / "setup.sh").read_text())
    assert awk, "setup.sh no longer parses the profile's modules with awk; update this test"
    program = awk.group(1).replace("'\\''", "'")
    out = subprocess.run(["awk", program, str(profile)], capture_output=True, text=True, check=True).stdout
    assert out.split() == list(load_profile(profile, REPO).modules)
