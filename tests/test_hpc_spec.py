"""Sweep specs and jobs.txt parsing: strict loading, grid expansion, names, errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from trm.config import load_config
from trm.hpc.jobs_file import (
    JobLine,
    JobsFileError,
    jobs_sweep,
    parse_jobs_text,
    parse_line,
    replace_line,
    train_command,
    with_state,
)
from trm.hpc.profile import LOCAL, ProfileError, load_profile
from trm.hpc.spec import Resources, SpecError, load_sweep, override_text, parse_time_minutes

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "trm/configs/quickstart.yaml"

EXAMPLE = f"""
name: maze_ablations
config: {QUICK}
overrides: {{epochs: 600, global_batch_size: 32}}
profile: local
resources: {{nodes: 1, gpus_per_node: 0, cpus_per_task: 2, mem_gb: 4, time: "1:30:00"}}
baseline: baseline
runs:
  - name: baseline
    expected: {{eval/exact_accuracy: 0.853}}
  - name: no_ema
    overrides: {{ema: false, train.epochs: 700}}
    expected_delta: {{eval/exact_accuracy: -0.075}}
grid:
  arch.L_layers: [1, 2]
  arch.L_cycles: [2, 4, 6]
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_example_spec_loads_runs_grid_and_expectations(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, EXAMPLE), runs_root=tmp_path / "runs")
    assert sweep.name == "maze_ablations"
    assert sweep.baseline == "baseline" and sweep.metric == "eval/exact_accuracy"
    assert sweep.profile is LOCAL
    assert sweep.resources == Resources(1, 0, 2, 4.0, "1:30:00")
    assert sweep.resources.time_min == 90
    names = [r.name for r in sweep.runs]
    assert names[:2] == ["baseline", "no_ema"]
    assert len(names) == 2 + 6
    assert "L_layers=1,L_cycles=2" in names and "L_layers=2,L_cycles=6" in names

    base, no_ema = sweep.run("baseline"), sweep.run("no_ema")
    # Aliases are stored under their place in the tree; a run's override beats the sweep's.
    assert base.overrides == {"train.epochs": "600", "train.global_batch_size": "32"}
    assert no_ema.overrides == {"train.epochs": "700", "train.global_batch_size": "32", "train.ema": "false"}
    assert base.config.train.ema is True and no_ema.config.train.ema is False
    assert no_ema.config.train.epochs == 700 and base.config.train.epochs == 600
    assert base.expected == {"eval/exact_accuracy": 0.853}
    assert no_ema.expected_delta == {"eval/exact_accuracy": -0.075}

    grid_run = sweep.run("L_layers=2,L_cycles=6")
    assert (grid_run.config.arch.L_layers, grid_run.config.arch.L_cycles) == (2, 6)
    assert grid_run.config.train.epochs == 600

    assert base.run_dir == (tmp_path / "runs" / "maze_ablations" / "baseline").resolve()
    assert base.config.run.name == "baseline" and Path(base.config.run.root) == base.run_dir.parent


def test_train_argv_reproduces_the_validated_config(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, EXAMPLE), runs_root=tmp_path / "runs")
    for run in sweep.runs:
        argv = run.train_argv()
        assert load_config(argv[0], argv[1:]) == run.config


@pytest.mark.parametrize("value", [True, False, 3, 1e-4, 0.5, "data/x", ["data/a", "data/b y"], [1, 2]])
def test_override_text_round_trips_through_the_config_parser(value: object) -> None:
    import yaml

    text = override_text(value, "x")
    parsed = yaml.safe_load(text) if isinstance(value, list) else text
    if isinstance(value, list):
        assert parsed == value
    elif isinstance(value, bool):
        assert text == ("true" if value else "false")
    elif isinstance(value, float):
        assert float(text) == value


@pytest.mark.parametrize(("snippet", "needles"), [
    ("nmae: x\n", ["unknown key 'nmae'", "Valid keys: name, description, config"]),
    ("runs: [{name: a, overides: {}}]\n", ["runs[0]", "unknown key 'overides'", "expected_delta"]),
    ("resources: {gpus: 4}\n", ["resources", "unknown key 'gpus'", "gpus_per_node"]),
    ("runs: [{name: a, overrides: {arch.L_layerz: 3}}]\n", ["run 'a'", "arch.L_layerz", "arch.L_layers"]),
    ("runs: [{name: a, overrides: {epochs: many}}]\n", ["run 'a'", "train.epochs", "expected int"]),
    ("runs: [{name: 'a;rm -rf ~'}]\n", ["runs[0]", "';'", "' '", "shell"]),
    ("runs: [{name: '$(id)'}]\n", ["'$'", "'('"]),
    ("runs: [{name: x}, {name: x}]\n", ["'x' is used twice", "runs[0]"]),
    ("runs: [{name: 'L_layers=1'}]\ngrid: {arch.L_layers: [1]}\n", ["'L_layers=1' is used twice"]),
    ("runs: [{name: a, overrides: {run.name: b}}]\n", ["'run.name' is set by the sweep"]),
    ("runs: [{name: a, overrides: {+run_name: b}}]\n", ["'+run_name' is set by the sweep"]),
    ("runs: [{name: a, expected_delta: {m: 1}}]\n", ["expected_delta needs a `baseline:`"]),
    ("baseline: zz\nruns: [a]\n", ["baseline 'zz' is not one of the runs: a"]),
    ("runs: [{name: a, expected: {m: high}}]\n", ["expected", "m must be a number"]),
    ("runs: []\n", ["no runs"]),
    ("grid: {arch.L_layers: 3}\n", ["grid", "non-empty list"]),
    ("resources: {time: '24:00'}\nruns: [a]\n", ["ambiguous", "24:00:00"]),
    ("resources: {nodes: 2}\nruns: [a]\n", ["nodes=2", "single-node"]),
    ("resources: {mem_gb: -1}\nruns: [a]\n", ["mem_gb must be a positive number"]),
])
def test_bad_specs_name_the_field(tmp_path: Path, snippet: str, needles: list[str]) -> None:
    head = f"name: s\nconfig: {QUICK}\nprofile: local\n"
    if "runs:" not in snippet and "grid:" not in snippet:
        snippet += "runs: [a]\n"
    path = write(tmp_path, head + snippet)
    with pytest.raises(SpecError) as err:
        load_sweep(path, runs_root=tmp_path)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
    assert str(path) in str(err.value)


def test_missing_config_and_profile_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="config 'nope.yaml' does not exist"):
        load_sweep(write(tmp_path, "name: s\nconfig: nope.yaml\nruns: [a]\n"), runs_root=tmp_path)
    with pytest.raises(SpecError, match="profile 'env/mycluster.yaml' does not exist.*Use 'local'"):
        load_sweep(write(tmp_path, f"name: s\nconfig: {QUICK}\nprofile: env/mycluster.yaml\nruns: [a]\n"),
                   runs_root=tmp_path)
    with pytest.raises(SpecError, match="sweep spec .* does not exist"):
        load_sweep(tmp_path / "absent.yaml")


def test_profile_queue_check_and_secrets(tmp_path: Path) -> None:
    prof = write(tmp_path, "scheduler: lsf\nqueue: gpuv100\nqueues: [gpuv100, gpua100]\n", "lsf.yaml")
    spec = f"name: s\nconfig: {QUICK}\nprofile: {prof}\nresources: {{queue: gpuh200}}\nruns: [a]\n"
    with pytest.raises(SpecError, match="queue 'gpuh200' is not one of the queues of profile lsf: gpuv"):
        load_sweep(write(tmp_path, spec), runs_root=tmp_path)
    ok = load_sweep(write(tmp_path, spec.replace("gpuh200", "gpua100")), runs_root=tmp_path)
    assert ok.resources.queue == "gpua100" and ok.profile.scheduler == "lsf"

    bad = write(tmp_path, "scheduler: slurm\nenv: {WANDB_API_KEY: abc}\n", "bad.yaml")
    with pytest.raises(ProfileError, match="WANDB_API_KEY.*credential"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="'scheduler' must be one of slurm, lsf, local"):
        load_profile(write(tmp_path, "scheduler: pbs\n", "pbs.yaml"))
    with pytest.raises(ProfileError, match="unknown key 'modulez'.*modules"):
        load_profile(write(tmp_path, "scheduler: slurm\nmodulez: [x]\n", "typo.yaml"))
    with pytest.raises(ProfileError, match=r"\$TRM_SURELY_UNSET_VAR.*not set"):
        load_profile(write(tmp_path, "scheduler: slurm\nscratch: /x/$TRM_SURELY_UNSET_VAR\n", "s.yaml"))


def test_profile_override_and_profile_runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prof = write(tmp_path, f"scheduler: slurm\nruns_root: {tmp_path}/scratch/runs\n", "p.yaml")
    spec = write(tmp_path, f"name: s\nconfig: {QUICK}\nruns: [a]\n")
    sweep = load_sweep(spec, profile=prof)
    assert sweep.profile.scheduler == "slurm"
    assert sweep.run("a").run_dir == tmp_path / "scratch/runs/s/a"
    monkeypatch.chdir(tmp_path)
    assert load_sweep(spec).run("a").run_dir == tmp_path / "runs/s/a"  # local profile: ./runs


@pytest.mark.parametrize(("text", "minutes"), [("24:00:00", 1440), ("1-00:00:00", 1440), ("0:10:30", 11),
                                               (90, 90), ("45", 45), ("2-12:00:00", 3600)])
def test_time_formats(text: str | int, minutes: int) -> None:
    assert parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["24:00", "1:70:00", "soon", 0, True])
def test_bad_times(text: object) -> None:
    with pytest.raises(SpecError):
        parse_time_minutes(text)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- jobs.txt

JOBS = """\
# maze ablations
[ ] python tools/train.py trm/configs/quickstart.yaml arch.L_layers=1 run.name=l1

[-] torchrun --nproc-per-node 2 tools/train.py trm/configs/quickstart.yaml seed=1 [gpu3:4711]
[x] python tools/train.py trm/configs/quickstart.yaml seed=2
[!] python tools/train.py trm/configs/quickstart.yaml seed=3 [exit 137]
[ ] OMP_NUM_THREADS=1 python -m trm.train trm/configs/quickstart.yaml 'data_paths=[data/a b]'
"""


def test_jobs_text_states_owner_and_exit_code() -> None:
    jobs = parse_jobs_text(JOBS)
    assert [(j.lineno, j.state) for j in jobs] == [(2, "pending"), (4, "running"), (5, "done"),
                                                   (6, "failed"), (7, "pending")]
    assert jobs[1].owner == "gpu3:4711" and jobs[1].command.endswith("seed=1")
    assert jobs[3].exit_code == 137 and jobs[3].command.endswith("seed=3")
    for job in jobs:
        assert parse_line(job.format(), job.lineno) == job


def test_replace_line_changes_only_that_line() -> None:
    jobs = parse_jobs_text(JOBS)
    text = replace_line(JOBS, with_state(jobs[0], "running", owner="host-a:12"))
    assert text.splitlines()[1] == "[-] python tools/train.py trm/configs/quickstart.yaml arch.L_layers=1 " \
                                   "run.name=l1 [host-a:12]"
    assert [a for i, a in enumerate(text.splitlines()) if i != 1] == \
           [a for i, a in enumerate(JOBS.splitlines()) if i != 1]


def test_train_command_parses_launchers_and_quoted_overrides() -> None:
    jobs = parse_jobs_text(JOBS)
    assert train_command(jobs[1]).overrides == ["seed=1"]
    cmd = train_command(jobs[4])
    assert cmd.config == "trm/configs/quickstart.yaml" and cmd.overrides == ["data_paths=[data/a b]"]
    with pytest.raises(JobsFileError, match="jobs.txt:9: expected a `tools/train.py CONFIG.yaml"):
        train_command(JobLine(9, "pending", "echo hello"))
    with pytest.raises(JobsFileError, match="'oops' is not a key=value override"):
        train_command(JobLine(3, "pending", "python tools/train.py c.yaml oops"))


@pytest.mark.parametrize("line", ["python tools/train.py c.yaml", "[?] python x", "[ ]"])
def test_bad_jobs_lines(line: str) -> None:
    with pytest.raises(JobsFileError, match="jobs.txt:1: expected a status box"):
        parse_line(line, 1)


def test_jobs_sweep_names_runs_from_lines(tmp_path: Path) -> None:
    text = JOBS.replace("trm/configs/quickstart.yaml", str(QUICK)).replace("data/a b", "data/ab")
    path = tmp_path / "jobs.txt"
    path.write_text(text)
    sweep, lines = jobs_sweep(path, LOCAL, Resources(), runs_root=tmp_path / "runs")
    assert sweep.name == "jobs"
    assert [r.name for r in sweep.runs][0] == "l1"
    second = sweep.runs[1]
    assert second.name.startswith("quickstart-") and len(second.name) == len("quickstart-") + 8
    assert second.config.data.data_paths == ["data/ab"]
    assert lines["l1"].lineno == 2 and lines[second.name].lineno == 7
    assert sweep.run("l1").run_dir == (tmp_path / "runs/jobs/l1")
    path.write_text(text + "[ ] python tools/train.py " + str(QUICK) + " run.root=/elsewhere\n")
    with pytest.raises(SpecError, match=r"jobs.txt:8: run.root is set by tools/submit.py"):
        jobs_sweep(path, LOCAL, Resources(), runs_root=tmp_path / "runs")
