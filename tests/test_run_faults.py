"""The trainer under faults and bad values: every config value checked before anything runs, absurd sizes
refused before allocating, a NaN loss fails the run, one trainer per run directory (a requeued job takes
over once the old holder is gone), a damaged complete checkpoint falls back to the next, an unwritable run
directory ends with a clear message and a heartbeat that says the run is dead."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_trainer
from waits import wait_for

from trm.config import ConfigError, load_config
from trm.hpc.collect import RunEntry, SweepEntry, collect_sweep
from trm.train.runlock import HOLDER_NAME, LOCK_NAME, RunLock, RunLockedError, dead_run_message, heartbeat


def _fails_cleanly(res: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------------
# config values


@pytest.mark.parametrize(
    "override,needle",
    [
        ("eval.eval_interval=0", "eval.eval_interval=0 is not accepted: expected an integer >= 1"),
        ("log.log_interval=0", "log.log_interval=0 is not accepted: expected an integer >= 1"),
        ("arch.expansion=0", "arch.expansion=0.0 is not accepted: expected a finite number > 0"),
        ("eval.global_batch_size=-4", "eval.global_batch_size=-4 is not accepted: expected an integer >= 0"),
        ("optim.lr=nan", "optim.lr=nan is not accepted: expected a finite number > 0"),
        ("optim.lr=-1", "optim.lr=-1.0 is not accepted"),
        ("optim.lr=inf", "optim.lr=inf is not accepted"),
        ("optim.puzzle_emb_lr=0", "optim.puzzle_emb_lr=0.0 is not accepted"),
        ("beta1=1.0", "optim.beta1=1.0 is not accepted: expected a finite number in [0, 1)"),
        ("beta2=-0.1", "optim.beta2=-0.1 is not accepted"),
        ("train.ema_rate=1", "train.ema_rate=1.0 is not accepted: expected a finite number in [0, 1)"),
        ("train.max_steps=-1", "train.max_steps=-1 is not accepted: expected an integer >= 0"),
        ("train.epochs=0", "train.epochs=0 is not accepted"),
        ("train.signals=[SIGBOGUS]", "train.signals=['SIGBOGUS'] is not accepted: expected a signal name"),
        ("train.checkpoint_every_minutes=-1", "train.checkpoint_every_minutes=-1.0 is not accepted"),
        ("arch.halt_exploration_prob=1.5", "arch.halt_exploration_prob"),
        ("arch.rms_norm_eps=0", "arch.rms_norm_eps=0.0 is not accepted"),
        ("data.max_train_groups=-1", "data.max_train_groups=-1 is not accepted"),
        ("run.name=../../..", "run.name='../../..' is not accepted: expected a plain folder name"),
        ("run.name=a/b", "run.name='a/b' is not accepted"),
        ("train.epochs=7", "eval.eval_interval=10 is not accepted: expected a divisor of train.epochs (7)"),
    ],
)
def test_every_value_is_checked_with_key_and_range(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "trm/configs/quickstart.yaml", [override])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_bad_values_stop_the_trainer_before_anything_runs(sudoku4: Path, tmp_path: Path) -> None:
    base = ["trm/configs/quickstart.yaml", *TINY, f"data_paths=[{sudoku4}]", f"run.root={tmp_path / 'r'}"]
    _fails_cleanly(run_trainer([*base, "eval.eval_interval=0"]), 2, "eval.eval_interval=0")
    _fails_cleanly(run_trainer([*base, "optim.lr=nan"]), 2, "optim.lr=nan")
    _fails_cleanly(run_trainer([*base, "+run_name=../../escaped"]), 2, "run.name='../../escaped'")
    assert not (tmp_path / "r").exists() and not (tmp_path / "escaped").exists()


def test_an_absurd_size_is_refused_before_allocating(sudoku4: Path, tmp_path: Path) -> None:
    res = run_trainer(
        [
            "trm/configs/quickstart.yaml",
            *TINY,
            f"data_paths=[{sudoku4}]",
            f"run.root={tmp_path}",
            "arch.hidden_size=1000000000",
            "arch.num_heads=1",
        ],
        timeout=300,
    )
    _fails_cleanly(res, 2, "cannot fit", "arch.hidden_size=1000000000", "nothing was allocated")


def test_a_nan_loss_fails_the_run_with_a_message(sudoku4: Path, tmp_path: Path) -> None:
    res = run_trainer(
        [
            "trm/configs/quickstart.yaml",
            *TINY,
            f"data_paths=[{sudoku4}]",
            f"run.root={tmp_path}",
            "+run_name=nan",
            "optim.lr=1e30",
            "train.max_steps=10",
        ]
    )
    _fails_cleanly(res, 1, "the training loss became nan")
    summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
    assert summary["state"] == "failed" and "loss became nan" in summary["message"]
    assert "failed at step" in (tmp_path / "nan" / "train.log").read_text()


# ---------------------------------------------------------------------------------------------------
# one trainer per run directory


def _start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "train.py"), *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_second_trainer_refuses_naming_the_holder_and_a_requeue_takes_over(sudoku4: Path, tmp_path: Path) -> None:
    args = [
        "trm/configs/quickstart.yaml",
        *TINY,
        f"data_paths=[{sudoku4}]",
        f"run.root={tmp_path}",
        "+run_name=r",
        "train.epochs=2000",
        "eval.eval_interval=2000",
        "train.checkpoint_every_steps=5",
    ]
    first = _start(args, {"SLURM_JOB_ID": "4242"})
    run = tmp_path / "r"
    try:
        wait_for("the first trainer's first checkpoint", lambda: any((run / "checkpoints").glob("step-*/COMPLETE")))
        second = run_trainer([*args, "train.max_steps=3"])
        _fails_cleanly(second, 2, "is in use by another trainer", f"pid {first.pid}", "job 4242")
        assert heartbeat(run).alive is True and dead_run_message(run) == ""
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert heartbeat(run).alive is False and "is gone without recording an end" in dead_run_message(run)
    # The summary still says running; the collector tells the dead run by its heartbeat.
    assert json.loads((run / "summary.json").read_text())["state"] == "running"
    row = collect_sweep(SweepEntry("s", tmp_path, [RunEntry("r", run)])).rows[0]
    assert row.state == "failed" and any("gone without recording an end" in p for p in row.problems), row
    lines_before = len((run / "metrics.jsonl").read_text().splitlines())
    # The holder is dead: the requeued job takes the run over at once and resumes.
    res = run_trainer([*args, "train.max_steps=30"], env={"SLURM_JOB_ID": "4242"})
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout + res.stderr
    assert json.loads((run / "summary.json").read_text())["state"] == "done"
    assert not (run / LOCK_NAME).exists() and heartbeat(run).alive is None
    assert len((run / "metrics.jsonl").read_text().splitlines()) > lines_before


def _foreign_marker(run: Path, duration: float, job: str) -> None:
    """A lease left by a trainer on another node (its process cannot be asked; only its age tells)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK_NAME).write_text(
        f"filelock/2\npid=12345\nhost=othernode\nmode=lease\ntoken=ab12\nduration={duration!r}\n"
    )
    (run / HOLDER_NAME).write_text(json.dumps({"host": "othernode", "pid": 12345, "job_id": job}))


def test_a_lease_from_another_node_is_taken_over_by_the_same_job_once_it_expires(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "r"
    _foreign_marker(run, 2.0, "777")
    monkeypatch.setenv("SLURM_JOB_ID", "888")  # another job: refused at once, naming the holder
    with pytest.raises(RunLockedError, match="host othernode, pid 12345, job 777"):
        RunLock(run, lease_s=2.0).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "777")  # the same job requeued: waits for the lease to run out
    lock = RunLock(run, lease_s=2.0)
    t0 = time.monotonic()
    lock.acquire()
    assert lock.held and time.monotonic() - t0 >= 1.5
    assert json.loads((run / HOLDER_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------------
# damaged checkpoints, unwritable run directory


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_complete_checkpoint_falls_back_to_the_next(sudoku4: Path, tmp_path: Path, damage: str) -> None:
    args = [
        "trm/configs/quickstart.yaml",
        *TINY,
        f"data_paths=[{sudoku4}]",
        f"run.root={tmp_path}",
        "+run_name=c",
        "train.checkpoint_every_steps=10",
        "train.keep_checkpoints=3",
    ]
    assert run_trainer([*args, "train.max_steps=30"]).returncode == 0
    newest = tmp_path / "c" / "checkpoints" / "step-00000030"
    state = newest / "state.pt"
    data = bytearray(state.read_bytes())
    if damage == "truncate":
        state.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        state.write_bytes(bytes(data))
    res = run_trainer([*args, "train.max_steps=40"])
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    out = res.stdout + res.stderr
    assert f"damaged checkpoint skipped: {newest}" in out
    assert "falling back to" in out and "resumed from" in out and "step-00000020 at step 20" in out
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["step"] == 40


def _as_other_user() -> list[str]:
    """root ignores file modes: run the trainer as nobody so a read-only folder really refuses it."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def shared_tmp() -> Path:
    """A folder another user can reach (pytest's own tmp_path is private to root)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="trm-ro-"))
    os.chmod(path, 0o777)
    yield path
    for d, _, _ in os.walk(path):
        os.chmod(d, 0o777)
    shutil.rmtree(path, ignore_errors=True)


def test_an_unwritable_run_dir_ends_with_a_clear_message_and_a_dead_heartbeat(sudoku4: Path, shared_tmp: Path) -> None:
    tmp_path = shared_tmp
    root = tmp_path / "runs"
    root.mkdir()
    data = tmp_path / "data"
    shutil.copytree(sudoku4, data)
    for d, _, files in os.walk(tmp_path):
        os.chmod(d, 0o777)
        for f in files:
            os.chmod(Path(d) / f, 0o644)
    cmd = [
        *_as_other_user(),
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        "trm/configs/quickstart.yaml",
        *TINY,
        f"data_paths=[{data}]",
        f"run.root={root}",
        "+run_name=ro",
        "train.epochs=2000",
        "eval.eval_interval=2000",
        "log.log_interval=2",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = root / "ro"
    try:
        wait_for("the first metrics line", lambda: (run / "metrics.jsonl").exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        for d, _, files in os.walk(run):
            for f in files:
                os.chmod(Path(d) / f, 0o444)
            os.chmod(d, 0o555)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        for d, _, _ in os.walk(run):
            os.chmod(d, 0o755)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert f"the run directory {run} can no longer be written" in err and "resume" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["state"] == "running"  # it could not even record its end ...
    assert "is gone without recording an end" in dead_run_message(run)  # ... but the heartbeat tells
