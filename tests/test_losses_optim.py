"""Losses, AdamATan2, the LR schedule and EMA against their written definitions."""

from __future__ import annotations

import math

import pytest
import torch

from trm.model.trm import IGNORE_LABEL, Carry, StepOutput
from trm.train.losses import act_loss, softmax_cross_entropy, stablemax_cross_entropy
from trm.train.optim import EMA, AdamATan2, lr_at


def test_stablemax_matches_its_definition_in_float64():
    logits = torch.tensor([[[2.0, -1.0, 0.0]]])
    labels = torch.tensor([[0]])
    s = [3.0, 1 / 2, 1.0]  # x + 1 for x >= 0, 1 / (1 - x) below
    expected = -math.log(s[0] / sum(s))
    loss = stablemax_cross_entropy(logits, labels)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert stablemax_cross_entropy(logits, torch.tensor([[IGNORE_LABEL]])).item() == 0


def test_softmax_cross_entropy_ignores_masked_labels():
    logits = torch.randn(2, 3, 4)
    labels = torch.tensor([[0, 1, IGNORE_LABEL], [3, IGNORE_LABEL, 2]])
    loss = softmax_cross_entropy(logits, labels)
    assert loss[0, 2] == 0 and loss[1, 1] == 0
    assert loss[0, 0].item() == pytest.approx(-torch.log_softmax(logits[0, 0], -1)[0].item(), rel=1e-6)


def _carry(labels: torch.Tensor, halted: list[bool], steps: list[int]) -> Carry:
    B, L = labels.shape
    z = torch.zeros(B, L, 2)
    return Carry(
        z,
        z,
        torch.tensor(steps, dtype=torch.int32),
        torch.tensor(halted),
        labels.int(),
        labels,
        torch.zeros(B, dtype=torch.int32),
    )


def test_act_loss_weights_and_metrics_follow_the_reference():
    labels = torch.tensor([[1, 2, IGNORE_LABEL], [0, 0, 0], [IGNORE_LABEL] * 3])
    logits = torch.full((3, 3, 3), -5.0)
    logits[0, 0, 1] = logits[0, 1, 2] = 5.0  # row 0 entirely right
    logits[1, :, 1] = 5.0  # row 1 entirely wrong
    q_halt = torch.tensor([1.0, 1.0, -1.0])
    out = StepOutput(logits, q_halt, torch.zeros(3), None)
    loss, m = act_loss(_carry(labels, [True, True, True], [2, 3, 4]), out, "stablemax_cross_entropy")
    per_token = stablemax_cross_entropy(logits, labels)
    lm = per_token[0].sum() / 2 + per_token[1].sum() / 3  # per-sequence mean, summed; row 2 has no labels
    bce = torch.nn.functional.binary_cross_entropy_with_logits(q_halt, torch.tensor([1.0, 0.0, 1.0]), reduction="sum")
    assert loss.item() == pytest.approx((lm + 0.5 * bce).item(), rel=1e-9)
    # metrics only over halted slots with at least one label: rows 0 and 1
    assert m["count"] == 2 and m["exact_accuracy"] == 1 and m["steps"] == 5
    assert m["accuracy"].item() == pytest.approx(1.0)
    assert m["q_halt_accuracy"] == 1  # row 0: q>=0 and correct; row 1: q>=0 but wrong
    _, m = act_loss(_carry(labels, [False, True, True], [2, 3, 4]), out, "stablemax_cross_entropy")
    assert m["count"] == 1 and m["exact_accuracy"] == 0


def _adam_atan2_reference(p, grads, lr, b1, b2, wd):
    """Scalar, straight from the update rule in the reference notes."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        p *= 1 - lr * wd
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        p -= lr / (1 - b1**t) * math.atan2(m, math.sqrt(v) / math.sqrt(1 - b2**t))
    return p


def test_adam_atan2_follows_the_update_rule():
    grads = [0.3, -1.2, 0.05, 2.0, -0.7]
    w = torch.nn.Parameter(torch.tensor([0.5, -0.25], dtype=torch.float64))
    opt = AdamATan2([w], lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)
    for g in grads:
        w.grad = torch.tensor([g, 2 * g], dtype=torch.float64)
        opt.step()
    assert w[0].item() == pytest.approx(_adam_atan2_reference(0.5, grads, 0.01, 0.9, 0.95, 0.1), rel=1e-12)
    assert w[1].item() == pytest.approx(
        _adam_atan2_reference(-0.25, [2 * g for g in grads], 0.01, 0.9, 0.95, 0.1), rel=1e-12
    )
    state = opt.state_dict()
    opt2 = AdamATan2([torch.nn.Parameter(w.detach().clone())], lr=0.01)
    opt2.load_state_dict(state)
    assert opt2.state_dict()["state"][0]["step"] == 5


def test_adam_atan2_foreach_update_equals_the_per_parameter_loop():
    """The multi-tensor path (the default, what a GPU run uses) computes exactly the written loop."""
    g = torch.Generator().manual_seed(0)
    shapes = [(64, 32), (32,), (3, 5, 7), (1,), (128, 16)]
    init = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) * 10.0**k for s in shapes] for k in range(-6, 2)]
    grads[3][1] = torch.zeros(shapes[1])  # a zero gradient: atan2(0, 0)
    finals = []
    for foreach in (True, False):
        params = [torch.nn.Parameter(x.clone()) for x in init]
        groups = [{"params": params[:3]}, {"params": params[3:], "weight_decay": 0.0, "lr": 3e-3}]
        opt = AdamATan2(groups, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=foreach)
        for step, gs in enumerate(grads):
            for i, (p, gr) in enumerate(zip(params, gs)):
                p.grad = None if (step == 2 and i == 4) else gr.clone()  # a parameter without a gradient
            opt.step()
        finals.append((params, opt.state_dict()))
    (fast, fast_state), (loop, loop_state) = finals
    assert all(torch.equal(a, b) for a, b in zip(fast, loop))
    assert all(not torch.equal(a, x) for a, x in zip(fast, init))  # they did move
    for k, st in fast_state["state"].items():
        other = loop_state["state"][k]
        assert torch.equal(st["exp_avg"], other["exp_avg"]) and torch.equal(st["exp_avg_sq"], other["exp_avg_sq"])


def test_adam_atan2_is_bounded_without_epsilon():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = AdamATan2([w], lr=1.0, betas=(0.9, 0.95))
    w.grad = torch.tensor([1e-30, 0.0, -1e30])
    opt.step()
    assert torch.isfinite(w).all() and w.abs().max() <= math.pi / 2 / 0.1 + 1e-6


def test_lr_schedule_warmup_constant_and_cosine():
    assert lr_at(0, 1.0, 10, 100, 1.0) == 0
    assert lr_at(5, 1.0, 10, 100, 1.0) == 0.5
    assert lr_at(50, 1.0, 10, 100, 1.0) == 1.0  # lr_min_ratio 1: constant after warmup
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_at(55, 1.0, 10, 100, 0.0) == pytest.approx(0.5)


def test_ema_averages_and_swaps_back():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    ema = EMA([p], rate=0.9)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()
    assert ema.shadow[0].item() == pytest.approx(0.1)
    ema.swap()
    assert p.item() == pytest.approx(0.1)
    ema.swap()
    assert p.item() == 1.0 and ema.shadow[0].item() == pytest.approx(0.1)
