"""Evaluation of encoder models at a cost of minutes: each eval batch's demos encoded once (not at every
ACT step) with the same logits as re-encoding, no forward pass spent on padding slots, and the collapse
probe aggregating the demo vectors it already has."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY
from fewshot_data import make_rule_dataset
from test_encoders import batch, model_for  # noqa: F401 - batch is a fixture

from trm.config import load_config
from trm.data.fewshot import probe_items, read_num_demos
from trm.data.format import read_split
from trm.model.encoders import ENCODER_TYPES
from trm.model.trm import IGNORE_LABEL
from trm.train import dist, etrm
from trm.train.loop import Trainer

# Every encoder, and the token table (the few-shot bench's encoder).
SETTINGS = {t: {} for t in ENCODER_TYPES} | {"standard-token": {"encoder_pooling": "token"}}


def _model(setting: str):  # noqa: ANN202
    kw = dict(SETTINGS[setting])
    if "encoder_pooling" in kw:
        kw["puzzle_emb_len"] = 6  # 4 slots (vocabulary 5 but PAD) + 2 set tokens
    model = model_for(setting.split("-")[0], halt_max_steps=4, **kw)
    return model.eval()


def _run(model, data: dict[str, torch.Tensor], cached: bool) -> list[tuple[torch.Tensor, ...]]:  # noqa: ANN001
    """Every ACT step of an evaluation; after step 1 half the slots halt and restart (as eval.halt_early
    does), so the refill path is exercised too."""
    steps = []
    with torch.no_grad():
        enc = model.eval_encoding(data) if cached else None
        carry = model.initial_carry(data)
        for i in range(model.halt_max_steps):
            carry, out = model(carry, data, None, halt_early=True, cached=enc)
            steps.append((out.logits, out.q_halt_logits, out.q_continue_logits, carry.z_H, carry.enc_state))
            if i == 0:
                carry = dataclasses.replace(carry, halted=torch.arange(len(carry.halted)) % 2 == 0)
    return steps


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_a_cached_eval_encoding_gives_the_same_logits_as_re_encoding_every_step(setting, batch):  # noqa: F811
    model = _model(setting)
    plain, cached = _run(model, batch, cached=False), _run(model, batch, cached=True)
    for i, (a, b) in enumerate(zip(plain, cached)):
        for x, y in zip(a, b):
            assert (x is None and y is None) or torch.equal(x, y), (setting, i)
    # and the steps do differ (the recurrent state moves, the decoder refines), so equality means something
    assert not torch.equal(plain[0][0], plain[-1][0])


def test_a_cached_encoding_is_refused_in_training(batch):  # noqa: F811
    model = _model("standard")
    enc = model.eval_encoding(batch)
    model.train()
    with pytest.raises(ValueError, match="evaluation only"):
        model(model.initial_carry(batch), batch, None, cached=enc)
    with pytest.raises(ValueError, match="for evaluation"):
        model.eval_encoding(batch)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_the_collapse_probe_matches_encoding_each_demo_alone(setting, tmp_path):
    """The single-demo contexts come from the demo vectors already computed, not from a second pass of
    the grid encoder; the figures are those of encoding each demo on its own."""
    root = make_rule_dataset(tmp_path / "rules", num_train_tasks=4, num_test_tasks=2, num_aug=2)
    s = read_split(root, "train")
    probe = probe_items(s, read_num_demos(root, "train", len(s.puzzle_identifiers)), 4, 0)
    model = _model(setting)
    enc = model.encoder
    got = etrm.collapse_metrics(model, probe, torch.device("cpu"))
    with torch.no_grad():
        di, dl, dm = probe.demo_inputs, probe.demo_labels, probe.demo_mask
        B, K, L = di.shape
        single = enc(di.reshape(B * K, 1, L), dl.reshape(B * K, 1, L), dm.reshape(B * K, 1), None).context
        single = single.flatten(1).view(B, K, -1)
        m = dm.float().unsqueeze(-1)
        mean = (single * m).sum(1) / m.sum(1)
        demos = (((single - mean.unsqueeze(1)).square() * m).sum(1) / m.sum(1)).mean(1).mean()
    assert got["context_var_demos"] == pytest.approx(demos.item(), rel=1e-4)
    assert got["context_var_demos"] > 0


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """2 held-out tasks x 2 puzzles x 2 queries = 8 queries in eval batches of 6: the second batch holds
    2 queries and 4 padding slots."""
    tmp = tmp_path_factory.mktemp("evalcache")
    data = make_rule_dataset(tmp / "rules", num_train_tasks=4, num_test_tasks=2, num_aug=2)
    cfg = load_config(
        "trm/configs/quickstart.yaml",
        [
            *TINY,
            "arch.puzzle_emb_len=2",
            "arch.encoder_type=standard",
            f"data_paths=[{data}]",
            f"run.root={tmp}",
            "+run_name=cache",
            "train.global_batch_size=6",
            "eval.global_batch_size=6",
        ],
    )
    return Trainer(cfg, dist.init("cpu"))


def test_evaluation_encodes_each_batch_once_and_skips_padding(trainer, monkeypatch):
    grid_calls: list[int] = []
    step_sizes: list[int] = []
    model = trainer.model
    h1 = model.encoder.grid.register_forward_hook(lambda m, a, o: grid_calls.append(a[0].shape[0]))
    h2 = model.inner.register_forward_hook(lambda m, a, o: step_sizes.append(a[2].shape[0]))
    # the collapse probe encodes its own tasks: left out of the count
    monkeypatch.setattr(trainer, "_encoder_metrics", lambda: {})
    try:
        metrics = trainer.evaluate(final=True)
    finally:
        h1.remove()
        h2.remove()
    steps = model.halt_max_steps
    assert len(step_sizes) == 2 * steps  # untrained weights never halt: every step of both batches
    assert step_sizes == [6] * steps + [2] * steps  # the 4 padding slots never reach the model
    assert len(grid_calls) == 2  # one encoding per batch, not one per step
    assert 0 <= metrics["eval/accuracy"] <= 1


def test_trimmed_padding_leaves_the_metrics_unchanged(trainer):
    """Batches of 6 (the last one padded, now cut) and of 8 (no padding) report the same figures."""
    results = {}
    for eval_B in (6, 8):
        trainer.eval_B = eval_B
        results[eval_B] = trainer.evaluate(final=True)
    trainer.eval_B = 6
    assert results[6].keys() == results[8].keys()
    for k, v in results[8].items():
        assert results[6][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k


def test_probe_accuracy_is_the_last_steps_accuracy_on_the_probe(tmp_path):
    """Without halt_early every query halts at the last step: the figures are that step's predictions
    against the labels (per-query share of correct cells, and whole-grid matches)."""
    root = make_rule_dataset(tmp_path / "rules", num_train_tasks=4, num_test_tasks=2, num_aug=2)
    s = read_split(root, "train")
    probe = probe_items(s, read_num_demos(root, "train", len(s.puzzle_identifiers)), 4, 0)
    model = _model("standard")
    got = etrm.probe_accuracy(model, probe, torch.device("cpu"), "softmax_cross_entropy", halt_early=False)
    data = probe.as_dict()
    with torch.no_grad():
        carry = model.initial_carry(data)
        for _ in range(model.halt_max_steps):
            carry, out = model(carry, data, None)
        logits = out.logits
    mask = probe.labels != IGNORE_LABEL
    correct = (logits.argmax(-1) == probe.labels) & mask
    per_query = correct.sum(-1) / mask.sum(-1)
    assert got["accuracy"] == pytest.approx(per_query.mean().item(), rel=1e-6)
    assert got["exact_accuracy"] == pytest.approx((correct.sum(-1) == mask.sum(-1)).float().mean().item())
