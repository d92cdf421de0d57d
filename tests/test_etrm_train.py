"""ETRM in the trainer: every encoder learns in both ACT modes, exact resume, pretrained decoders,
held-out ARC evaluation with the collapse diagnostic, and the errors for bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import TINY
from fewshot_data import make_rule_dataset
from test_data_arc import build_arc, make_kaggle
from test_durable import _kill_at_step, final_state, metric_lines, run_ranks

from trm.config import load_config
from trm.model.encoders import ENCODER_TYPES
from trm.model.trm import TRM
from trm.train.entry import main
from trm.train.init_weights import InitError, _parameter_names, load_initial_weights

CONFIG = "trm/configs/quickstart.yaml"
# TINY with a 2-token prefix for the encoder's context.
ETRM_TINY = [*TINY, "arch.puzzle_emb_len=2", "log.log_interval=25"]


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rule_dataset(tmp_path_factory.mktemp("rules") / "rules", num_train_tasks=4, num_test_tasks=2, num_aug=4)


def args(data: Path, root: Path, name: str, *extra: str) -> list[str]:
    return [CONFIG, *ETRM_TINY, f"data_paths=[{data}]", f"run.root={root}", f"+run_name={name}", *extra]


def events(run: Path, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


@pytest.fixture(scope="module")
def fill_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rule_dataset(
        tmp_path_factory.mktemp("fill") / "fill", num_train_tasks=5, num_test_tasks=1, num_aug=4, rule="fill"
    )


MODES = {
    "original": ["train.epochs=320", "eval.eval_interval=320"],
    "online": ["train.act_mode=online", "arch.num_act_steps=2", "train.epochs=160", "eval.eval_interval=160"],
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("encoder_type", list(ENCODER_TYPES))
def test_every_encoder_overfits_tiny_tasks_in_both_modes(fill_tasks, tmp_path, encoder_type, mode):
    """5 tasks that each paint the grid with their own colour; the queries share inputs, so without
    reading the demos a model can only guess the task (0.1-0.2 exact, measured with encoder_type=none)."""
    name = f"{encoder_type}-{mode}"
    assert (
        main(
            args(
                fill_tasks,
                tmp_path,
                name,
                f"arch.encoder_type={encoder_type}",
                "optim.lr=3e-3",
                "train.ema=false",
                *MODES[mode],
            )
        )
        == 0
    )
    trains = events(tmp_path / name, "train")
    last = [e["train/exact_accuracy"] for e in trains[-2:]]
    print(name, [round(e["train/exact_accuracy"], 2) for e in trains])
    assert sum(last) / len(last) > 0.6, last


@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    "setting", [("original", "recurrent"), ("online", "variational")], ids=["original-recurrent", "online-variational"]
)
def test_sigkill_then_auto_resume_is_bit_identical(rules, tmp_path, nproc, setting):
    mode, encoder_type = setting
    extra = [
        "train.max_steps=16",
        "train.checkpoint_every_steps=4",
        "log.log_interval=1",
        "train.epochs=100",
        "eval.eval_interval=50",
        f"train.act_mode={mode}",
        f"arch.encoder_type={encoder_type}",
        "arch.kl_weight=0.01",
        "arch.num_act_steps=2",
        "arch.halt_exploration_prob=0.5",
    ]
    run_ranks(args(rules, tmp_path, "straight", *extra), nproc)
    killed = args(rules, tmp_path, "killed", *extra)
    _kill_at_step(killed, nproc, step=random.Random(nproc).choice([9, 10, 13]))
    run_ranks(killed, nproc)
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "killed")
    assert b["attempts"] == 2 and a["step"] == b["step"] == 16
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert any(k.startswith("encoder.") for k in a["model"])
    for x, y in zip(a["ema"]["shadow"], b["ema"]["shadow"]):
        assert torch.equal(x, y)
    assert metric_lines(tmp_path / "straight") == metric_lines(tmp_path / "killed")
    if mode == "original":  # the carry, the encoder's latent included, went through the checkpoint
        carry = torch.load(
            sorted((tmp_path / "killed" / "checkpoints").iterdir())[-1] / "rank-00000.pt", weights_only=False
        )["carry"]
        assert {"enc_state", "demo_inputs", "demo_mask"} <= set(carry)


def test_encoder_on_data_without_demos_is_a_clear_error(sudoku4, tmp_path, capsys):
    assert main(args(sudoku4, tmp_path, "nodemos", "arch.encoder_type=standard")) == 2
    err = capsys.readouterr().err
    assert "arch.encoder_type=standard" in err and "--demos-in test" in err and "all__num_demos.npy" in err


def _trm_checkpoint(rules: Path, root: Path) -> Path:
    """A short TRM run (puzzle embedding, EMA) on the same data: the decoder to start from."""
    assert (
        main(
            args(
                rules,
                root,
                "trm",
                "arch.puzzle_emb_ndim=64",
                "train.max_steps=6",
                "train.epochs=100",
                "eval.eval_interval=50",
            )
        )
        == 0
    )
    return sorted((root / "trm" / "checkpoints").iterdir())[-1]


def test_pretrained_decoder_loads_ema_weights_skipping_the_puzzle_table(rules, tmp_path, capsys):
    ckpt = _trm_checkpoint(rules, tmp_path)
    src = torch.load(ckpt / "state.pt", weights_only=False)
    ema = dict(zip(_parameter_names(src["config"]), src["ema"]["shadow"]))
    cfg = load_config(CONFIG, ETRM_TINY[:] + ["arch.encoder_type=standard"])
    model = TRM(cfg.arch, 5, 4, 20, 8, torch.float32)
    report = load_initial_weights(model, ckpt, use_ema=True, say=print)
    out = capsys.readouterr().out
    assert "unexpected 1" in out and "inner.puzzle_emb.weights" in out and "missing" in out
    assert report["unexpected"] == ["inner.puzzle_emb.weights"]
    assert report["missing"] and all(k.startswith("encoder.") for k in report["missing"])
    state = model.state_dict()
    for k in report["loaded"]:
        want = ema.get(k, src["model"][k])
        assert torch.equal(state[k], want), k
    assert not torch.equal(ema["inner.lm_head.weight"], src["model"]["inner.lm_head.weight"])
    load_initial_weights(model, ckpt, use_ema=False, say=print)
    assert torch.equal(model.state_dict()["inner.lm_head.weight"], src["model"]["inner.lm_head.weight"])


def test_paper_weights_only_files_load_and_misfits_name_the_key(rules, tmp_path):
    ckpt = _trm_checkpoint(rules, tmp_path)
    src = torch.load(ckpt / "state.pt", weights_only=False)["model"]
    paper = tmp_path / "step_518071"
    torch.save({f"_orig_mod.model.{k}": v for k, v in src.items()}, paper)
    cfg = load_config(CONFIG, ETRM_TINY[:] + ["arch.encoder_type=hybrid_standard"])
    model = TRM(cfg.arch, 5, 4, 20, 8, torch.float32)
    report = load_initial_weights(model, paper, say=lambda _: None)
    assert torch.equal(model.state_dict()["inner.q_head.weight"], src["inner.q_head.weight"])
    assert report["unexpected"] == ["inner.puzzle_emb.weights"]
    wide = load_config(CONFIG, ETRM_TINY[:] + ["arch.encoder_type=standard", "arch.hidden_size=64"])
    with pytest.raises(InitError) as e:
        load_initial_weights(TRM(wide.arch, 5, 4, 20, 8, torch.float32), paper, say=lambda _: None)
    assert "inner.lm_head.weight: file (5, 32), model (5, 64)" in str(e.value)


def test_frozen_decoder_and_encoder_learning_rate(rules, tmp_path):
    ckpt = _trm_checkpoint(rules, tmp_path)
    assert (
        main(
            args(
                rules,
                tmp_path,
                "staged",
                "arch.encoder_type=standard",
                f"load_pretrained_decoder={ckpt}",
                "train.init_from_ema=false",
                "freeze_decoder_steps=4",
                "train.max_steps=4",
                "train.epochs=100",
                "eval.eval_interval=50",
                "encoder_lr_scale=0.25",
                "optim.lr_warmup_steps=1",
            )
        )
        == 0
    )
    src = torch.load(ckpt / "state.pt", weights_only=False)["model"]
    got = final_state(tmp_path / "staged")
    decoder = [k for k in got["model"] if k.startswith("inner.") and k in src]
    assert decoder and all(torch.equal(got["model"][k], src[k]) for k in decoder)
    groups = got["adam"]["param_groups"]
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(0.25 * groups[0]["lr"]) and groups[0]["lr"] > 0


@pytest.mark.slow
def test_held_out_arc_evaluation_with_pass_at_k_and_collapse(tmp_path):
    data = build_arc(tmp_path, make_kaggle(tmp_path / "kaggle"), "--demos-in", "test", "--num-aug", "3")
    assert (
        main(
            [
                CONFIG,
                *ETRM_TINY,
                f"data_paths=[{data}]",
                f"run.root={tmp_path}",
                "+run_name=arc",
                "arch.encoder_type=standard",
                "train.max_steps=2",
                "train.epochs=20",
                "eval.eval_interval=10",
                "evaluators=[arc]",
                "eval.max_batches=0",
                "eval.global_batch_size=8",
                "eval.halt_early=true",
                "eval.max_augmentations=2",
            ]
        )
        == 0
    )
    final = json.loads((tmp_path / "arc" / "summary.json").read_text())["final"]
    assert {
        "eval/arc/pass@1",
        "eval/arc/pass@2",
        "eval/collapse_ratio",
        "eval/collapse_ratio_train",
        "eval/context_var_tasks",
        "eval/context_var_demos",
        "eval/kl_loss",
    } <= set(final)
    assert final["eval/arc/coverage"] == 1.0  # every held-out test input got votes from its queries
    sub = json.loads(next((tmp_path / "arc").glob("evaluator_arc_step_*/submission.json")).read_text())
    assert sorted(sub) == ["eval0000", "eval0001"] and len(sub["eval0001"]) == 2


def _settings(run) -> dict:  # noqa: ANN001 - a RunSpec
    cfg = run.config
    return {
        "encoder": cfg.arch.encoder_type,
        "mode": cfg.train.act_mode,
        "explore": cfg.arch.halt_exploration_prob,
        "steps": cfg.arch.num_act_steps,
        "clip": cfg.optim.grad_clip_norm,
        "epochs": cfg.train.epochs,
        "eval": cfg.eval.eval_interval,
        "init": cfg.train.init_from,
        "groups": cfg.data.max_train_groups,
    }


def test_act_mode_specs_and_their_jobs_file_hold_the_same_runs():
    from trm.hpc.jobs_file import jobs_sweep
    from trm.hpc.profile import load_profile
    from trm.hpc.spec import Resources, load_sweep

    spec = {r.name: _settings(r) for r in load_sweep("jobs/act_modes.yaml").runs}
    lines, _ = jobs_sweep("jobs/act_modes.jobs.txt", load_profile("local"), Resources())
    assert {r.name: _settings(r) for r in lines.runs} == spec
    assert {(s["mode"], s["explore"]) for n, s in spec.items() if n.startswith("O")} == {
        ("original", 0.3),
        ("original", 0.5),
        ("original", 0.7),
    }
    assert {(s["mode"], s["steps"]) for n, s in spec.items() if n.startswith("L")} == {
        ("online", 2),
        ("online", 4),
        ("online", 8),
    }
    assert {s["encoder"] for n, s in spec.items() if n.startswith("E")} == {
        "hybrid_standard",
        "hybrid_variational",
        "lpn_variational",
    }
    for s in spec.values():
        assert (s["clip"], s["epochs"], s["eval"], s["groups"]) == (1.0, 20000, 5000, 32) and s["init"]
    overfit = load_sweep("jobs/etrm_overfit.yaml").runs
    assert {r.config.arch.encoder_type for r in overfit} == set(ENCODER_TYPES)
    assert all(r.config.data.max_train_groups == 32 for r in overfit)


def test_the_collector_shows_the_etrm_settings_side_by_side(rules, tmp_path):
    from trm.hpc.collect import collect, format_table

    runs = tmp_path / "runs" / "modes"
    common = [
        "arch.encoder_type=standard",
        "train.max_steps=4",
        "train.epochs=100",
        "eval.eval_interval=50",
        "log.log_interval=2",
    ]
    assert main([*args(rules, runs, "orig", *common), "arch.halt_exploration_prob=0.3"]) == 0
    assert main([*args(rules, runs, "online", *common), "train.act_mode=online", "arch.num_act_steps=3"]) == 0
    table = format_table(collect([runs])[0])
    header = next(line for line in table.splitlines() if line.startswith("name"))
    for col in ("encoder", "mode", "explore", "pass@2", "train acc", "collapse"):
        assert col in header
    orig = next(line for line in table.splitlines() if line.startswith("orig"))
    online = next(line for line in table.splitlines() if line.startswith("online"))
    assert "standard" in orig and "original" in orig and "0.3" in orig and "%" in orig
    assert "online" in online and "3 steps" in online
