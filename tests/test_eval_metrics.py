"""Evaluation figures as the reference reports them, independent of the eval batch size and of how
many ACT steps ran; the intermediate evals on a subset, the last one on the whole test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY

from trm.config import load_config
from trm.data.iterator import eval_batches
from trm.train import dist
from trm.train.loop import Trainer
from trm.train.losses import stablemax_cross_entropy


@pytest.fixture(scope="module")
def trained(sudoku4: Path, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """A tiny model trained for 20 steps (so that the Q-head and the accuracies are not at their init)."""
    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        "trm/configs/quickstart.yaml",
        [
            *TINY,
            f"data_paths=[{sudoku4}]",
            f"run.root={root}",
            "+run_name=evalm",
            "train.max_steps=20",
            "optim.lr=3e-3",
        ],
    )
    trainer = Trainer(cfg, dist.init("cpu"))
    assert trainer.fit() == 0
    return trainer


def test_eval_metrics_do_not_depend_on_the_eval_batch_size(trained):
    """64 test puzzles: batch 64 has no padding, 24 pads 8 slots, 128 pads 64. Before the fix the padding
    slots (copies of example 0) counted in the accuracies and in q_halt_loss."""
    results = {}
    for eval_B in (64, 24, 128):
        trained.eval_B = eval_B
        results[eval_B] = trained.evaluate(final=True)
    base = results[64]
    assert base["eval/q_halt_loss"] > 0 and 0 < base["eval/accuracy"] < 1
    for eval_B in (24, 128):
        assert results[eval_B].keys() == base.keys()
        for k, v in base.items():
            assert results[eval_B][k] == pytest.approx(v, rel=1e-5, abs=1e-7), (eval_B, k)


def test_eval_losses_are_each_examples_final_step_losses(trained):
    """eval/lm_loss and eval/q_halt_loss: the per-example mean at the last ACT step (the reference's
    figure), not the sum over every step (which read halt_max_steps times too high)."""
    trained.eval_B = 64
    metrics = trained.evaluate(final=True)
    model, ema = trained.model, trained.ema
    (batch,) = list(eval_batches(trained.test_split, 64, 0, 1))
    data = batch.as_dict()
    ema.swap()
    try:
        model.eval()
        with torch.inference_mode():
            carry = model.initial_carry(data)
            for _ in range(trained.cfg.arch.halt_max_steps):
                carry, out = model(carry, data, None)
    finally:
        ema.swap()
    labels = carry.labels
    counts = (labels != -100).sum(-1)
    lm = (stablemax_cross_entropy(out.logits, labels).sum(-1) / counts).mean().item()
    correct = ((out.logits.argmax(-1) == labels) | (labels == -100)).all(-1).float()
    q = torch.nn.functional.binary_cross_entropy_with_logits(out.q_halt_logits, correct).item()
    assert metrics["eval/lm_loss"] == pytest.approx(lm, rel=1e-6)
    assert metrics["eval/q_halt_loss"] == pytest.approx(q, rel=1e-5)
    assert metrics["eval/steps"] == trained.cfg.arch.halt_max_steps


def test_intermediate_evals_use_the_subset_and_the_last_one_the_whole_split(sudoku4, tmp_path):
    """eval.max_batches=1 of 16: the evaluation at step 5 sees 16 puzzles, the final one all 64."""
    cfg = load_config(
        "trm/configs/quickstart.yaml",
        [
            *TINY,
            f"data_paths=[{sudoku4}]",
            f"run.root={tmp_path}",
            "+run_name=subset",
            "eval.max_batches=1",
            "eval.save_predictions=1000",
            "train.epochs=10",
            "eval.eval_interval=5",
        ],
    )
    trainer = Trainer(cfg, dist.init("cpu"))
    assert trainer.fit() == 0
    run = tmp_path / "subset"
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["event"] == "eval"]
    assert len(evals) == 2
    import numpy as np

    sizes = {p.name: len(np.load(p)["preds"]) for p in sorted((run / "predictions").glob("*.npz"))}
    first, last = (f"step-{e['step']:08d}.npz" for e in evals)
    assert sizes[first] == 16 and sizes[last] == 64
