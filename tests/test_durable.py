"""Durable distributed training: N ranks = 1 process, exact resume after SIGKILL, preemption, torn checkpoints."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, launch_ranks, run_trainer, wait_all
from waits import limit

from trm.rundir import EXIT_REQUEUE
from trm.train import checkpoint as ckpt

CONFIG = "trm/configs/quickstart.yaml"


def tiny(data: Path, root: Path, name: str, *extra: str) -> list[str]:
    return [
        CONFIG,
        *TINY,
        f"data_paths=[{data}]",
        f"run.root={root}",
        f"+run_name={name}",
        "log.log_interval=1",
        "arch.puzzle_emb_ndim=32",
        "arch.puzzle_emb_len=1",
        "optim.puzzle_emb_lr=1e-2",
        *extra,
    ]


def final_state(run: Path) -> dict:
    newest = ckpt.latest(run / "checkpoints", warn=False)
    assert newest is not None
    return torch.load(newest / "state.pt", map_location="cpu", weights_only=False)


def metric_lines(run: Path) -> dict[tuple[str, int], dict]:
    """Last line per (event, step), without the wall-clock fields."""
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        e = json.loads(line)
        out[(e["event"], e["step"])] = {k: v for k, v in e.items() if k not in ("time_s", "train/samples_per_s")}
    return out


def run_ranks(args: list[str], nproc: int) -> None:
    if nproc == 1:
        res = run_trainer(args)
        assert res.returncode == 0, res.stderr[-3000:]
    else:
        for rc, text in wait_all(launch_ranks(args, nproc)):
            assert rc == 0, text[-3000:]


def test_two_gloo_ranks_train_like_one_process(sudoku4_puzzle_emb, tmp_path):
    """Same global batch on 1 process and on 2 ranks (each its half, gradients summed by DDP's
    bucketed all-reduce, puzzle-embedding gradients gathered): the same weights up to float rounding."""
    run_ranks(tiny(sudoku4_puzzle_emb, tmp_path, "one", "train.max_steps=15"), 1)
    res = run_trainer(tiny(sudoku4_puzzle_emb, tmp_path, "two", "train.max_steps=15"), nproc=2)  # via torchrun
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    worst = 0.0
    for k, v in a["model"].items():
        worst = max(worst, (v.float() - b["model"][k].float()).abs().max().item())
    for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"]):
        worst = max(worst, (x - y).abs().max().item())
    print(f"max |w_1proc - w_2ranks| after 15 steps: {worst:.3e}")
    assert worst < 1e-4  # measured: ~1e-6 (summation order of the split batch)
    assert a["model"]["inner.puzzle_emb.weights"].abs().sum() > 0  # the sparse path really trained
    la, lb = metric_lines(tmp_path / "one"), metric_lines(tmp_path / "two")
    assert la.keys() == lb.keys()
    assert la[("eval", 15)]["eval/exact_accuracy"] == pytest.approx(lb[("eval", 15)]["eval/exact_accuracy"], abs=0.02)


_PROBE = """
import gc, sys
import torch
gc.disable()  # only what main() frees itself counts
from trm.train import entry
rc = entry.main(sys.argv[1:])
alive = [o for o in gc.get_objects() if isinstance(o, torch.nn.parallel.DistributedDataParallel)]
print(f"exit {rc}; DDP wrappers alive after main: {len(alive)}")
"""


def test_main_frees_the_ddp_wrapper_before_the_process_exits(sudoku4_puzzle_emb, tmp_path):
    """A DDP wrapper (process group, Python comm hook) left for interpreter exit made a clean 2-rank run
    abort now and then with SIGABRT; main() must free it itself, whatever the garbage collector does."""
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    args = tiny(sudoku4_puzzle_emb, tmp_path, "probe", "train.max_steps=4")
    for rc, text in wait_all(launch_ranks(args, 2, script=probe)):
        assert rc == 0, text[-3000:]
        assert "exit 0; DDP wrappers alive after main: 0" in text, text[-3000:]


def _kill_at_step(args: list[str], nproc: int, step: int) -> None:
    """Start the run and SIGKILL every rank once rank 0 has printed the given train step."""
    procs = launch_ranks(args, nproc)
    for line in procs[0].stdout:
        if line.startswith(f"train step {step:>7}/"):
            break
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=limit(60))
        assert p.returncode == -signal.SIGKILL


@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("act_continue", [False, True], ids=["no-ACT-continue", "ACT-continue"])
def test_sigkill_then_auto_resume_is_bit_identical(sudoku4_puzzle_emb, tmp_path, nproc, act_continue):
    extra = ["train.max_steps=20", "train.checkpoint_every_steps=4", f"arch.no_ACT_continue={not act_continue}"]
    run_ranks(tiny(sudoku4_puzzle_emb, tmp_path, "straight", *extra), nproc)
    args = tiny(sudoku4_puzzle_emb, tmp_path, "killed", *extra)
    _kill_at_step(args, nproc, step=random.Random(nproc).choice([10, 11, 14]))
    run_ranks(args, nproc)  # train.resume=auto is the default
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "killed")
    assert b["attempts"] == 2 and a["step"] == b["step"] == 20
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"]):
        assert torch.equal(x, y)
    for sa, sb in zip(a["adam"]["state"].values(), b["adam"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert metric_lines(tmp_path / "straight") == metric_lines(tmp_path / "killed")


def test_signal_checkpoints_and_exits_for_requeue_then_resumes(sudoku4_puzzle_emb, tmp_path):
    """SIGUSR2 to one rank of a real 2-rank run: both agree, rank 0 saves, both exit 75; then resume."""
    args = tiny(sudoku4_puzzle_emb, tmp_path, "pre", "train.max_steps=40", "train.epochs=40", "eval.eval_interval=20")
    procs = launch_ranks(args, 2)
    for line in procs[0].stdout:
        if line.startswith("train step       6/"):
            break
    procs[1].send_signal(signal.SIGUSR2)
    results = wait_all(procs)
    assert [rc for rc, _ in results] == [EXIT_REQUEUE, EXIT_REQUEUE], results[0][1][-2000:]
    assert "signal SIGUSR2" in results[1][1] or "another rank" in results[0][1]
    run = tmp_path / "pre"
    newest = ckpt.latest(run / "checkpoints", warn=False)
    assert newest is not None and 6 <= int(newest.name.split("-")[1]) < 40
    assert json.loads((run / "summary.json").read_text())["state"] == "checkpointed"
    assert {f.name for f in newest.iterdir()} == {"state.pt", "rank-00000.pt", "rank-00001.pt", "COMPLETE"}
    run_ranks(args, 2)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["state"] == "done" and summary["step"] == 40 and summary["attempts"] == 2
    run_ranks(
        tiny(sudoku4_puzzle_emb, tmp_path, "ref", "train.max_steps=40", "train.epochs=40", "eval.eval_interval=20"), 2
    )
    ref, got = final_state(tmp_path / "ref"), final_state(run)
    assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"])


def test_time_limit_checkpoints_without_a_signal(sudoku4, tmp_path):
    res = run_trainer(
        [
            CONFIG,
            *TINY,
            f"data_paths=[{sudoku4}]",
            f"run.root={tmp_path}",
            "+run_name=tl",
            "train.epochs=1000",
            "eval.eval_interval=500",
            "train.time_limit_minutes=0.12",
            "train.time_limit_margin_minutes=0.05",
        ]
    )
    assert res.returncode == EXIT_REQUEUE, res.stderr[-2000:]
    assert "time limit" in res.stdout
    assert ckpt.latest(tmp_path / "tl" / "checkpoints", warn=False) is not None


def test_a_kill_during_a_write_never_leaves_a_loadable_torn_checkpoint(sudoku4, tmp_path):
    """Checkpoint every step and SIGKILL at random moments: whatever `auto` would pick always loads whole."""
    args = [
        CONFIG,
        *TINY,
        f"data_paths=[{sudoku4}]",
        f"run.root={tmp_path}",
        "+run_name=torn",
        "train.checkpoint_every_steps=1",
        "train.keep_checkpoints=2",
        "train.max_steps=400",
    ]
    rng = random.Random(0)
    for _ in range(4):
        procs = launch_ranks(args, 1)
        time.sleep(rng.uniform(3.0, 6.0))
        procs[0].kill()
        procs[0].wait()
        newest = ckpt.latest(tmp_path / "torn" / "checkpoints", warn=False)
        if newest is not None:
            state, rank_state = ckpt.load(newest, 0, torch.device("cpu"))
            assert state["step"] == int(newest.name.split("-")[1]) and rank_state is not None


def test_latest_skips_torn_folders_and_names_them(tmp_path):
    root = tmp_path / "checkpoints"
    for step, complete in ((10, True), (20, True), (30, False)):
        d = root / ckpt.step_dir_name(step)
        d.mkdir(parents=True)
        if complete:
            (d / ckpt.MARKER).write_text("")
    (root / ".partial-step-00000040").mkdir()
    with pytest.warns(UserWarning, match="step-00000030.*|.partial-step-00000040"):
        assert ckpt.latest(root).name == "step-00000020"


@pytest.mark.slow
def test_resume_modes_and_config_changes(sudoku4, tmp_path):
    base = [CONFIG, *TINY, f"data_paths=[{sudoku4}]", f"run.root={tmp_path}", "train.max_steps=4"]
    res = run_trainer([*base, "+run_name=t", "train.resume=true"])
    assert res.returncode == 2 and "no complete checkpoint" in res.stderr
    assert run_trainer([*base, "+run_name=c"]).returncode == 0
    (tmp_path / "c" / "config.yaml").unlink()  # only the checkpoint's own record is left to compare with
    res = run_trainer([*base, "+run_name=c", "train.max_steps=6", "optim.lr=5e-3"])
    assert res.returncode == 2 and "different config" in res.stderr and "optim.lr: 0.001 -> 0.005" in res.stderr
    res = run_trainer(
        [*base, "+run_name=c", "train.max_steps=6", "optim.lr=5e-3", "train.resume_ignore_config_change=true"]
    )
    assert res.returncode == 0 and "resumed from" in res.stdout
    path = ckpt.latest(tmp_path / "c" / "checkpoints", warn=False)
    res = run_trainer([*base, "+run_name=d", f"train.resume={path}", "train.max_steps=8", "optim.lr=5e-3"])
    assert res.returncode == 0 and f"resumed from {path} at step 6" in res.stdout


@pytest.mark.slow
def test_checkpoints_every_few_seconds_not_only_at_evals(sudoku4, tmp_path):
    from trm.train.entry import main

    rc = main(
        [
            CONFIG,
            *TINY,
            f"data_paths=[{sudoku4}]",
            f"run.root={tmp_path}",
            "+run_name=minutes",
            "train.epochs=100",
            "eval.eval_interval=100",
            "train.max_steps=300",
            "train.checkpoint_every_eval=false",
            "train.checkpoint_every_minutes=0.005",
            "train.keep_checkpoints=1000",
        ]
    )
    assert rc == 0
    steps = [s for s, _, ok in ckpt.list_checkpoints(tmp_path / "minutes" / "checkpoints") if ok]
    assert len(steps) >= 3 and steps[-1] == 300, steps
