"""The ACT loss: per-sequence token cross-entropy + 0.5 * (Q-halt BCE [+ Q-continue BCE]).

Everything is a sum over the local batch; the trainer divides by the global batch size, so the
all-reduced gradient is that of the global mean (the reference's normalisation). Metrics are sums
over the slots that halted at this step; the logger divides by their count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trm.model.trm import IGNORE_LABEL, Carry, StepOutput

METRIC_KEYS = (
    "count",
    "accuracy",
    "exact_accuracy",
    "q_halt_accuracy",
    "steps",
    "lm_loss",
    "q_halt_loss",
    "q_continue_loss",
    "kl_loss",
)


def _stablemax_s(x: torch.Tensor, epsilon: float = 1e-30) -> torch.Tensor:
    return torch.where(x < 0, 1 / (1 - x + epsilon), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = _stablemax_s(x)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token loss (B, L); float64 as in the reference (float32 where the device has no float64)."""
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    logprobs = log_stablemax(logits.to(dtype), dim=-1)
    valid = labels != IGNORE_LABEL
    picked = torch.gather(logprobs, -1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(
        logits.float().flatten(0, 1), labels.long().flatten(), ignore_index=IGNORE_LABEL, reduction="none"
    ).view(labels.shape)


LOSSES = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}


def act_loss(
    carry: Carry, out: StepOutput, loss_type: str, kl_weight: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss for one supervision step (sum over local slots) and metric sums over the halted slots;
    with a variational demo encoder, + kl_weight * its KL (summed over every slot, like lm_loss)."""
    labels = carry.labels  # the slots' examples, not the incoming batch's
    mask = labels != IGNORE_LABEL
    counts = mask.sum(-1)
    divisor = counts.clamp_min(1).unsqueeze(-1)

    with torch.no_grad():
        correct = mask & (out.logits.argmax(-1) == labels)
        seq_correct = correct.sum(-1) == counts
        valid = carry.halted & (counts > 0)
        metrics = {
            "count": valid.sum(),
            "accuracy": torch.where(valid, (correct.float() / divisor).sum(-1), 0).sum(),
            "exact_accuracy": (valid & seq_correct).sum(),
            "q_halt_accuracy": (valid & ((out.q_halt_logits >= 0) == seq_correct)).sum(),
            "steps": torch.where(valid, carry.steps, 0).sum(),
        }

    lm_loss = (LOSSES[loss_type](out.logits, labels) / divisor).sum()
    q_halt_loss = F.binary_cross_entropy_with_logits(
        out.q_halt_logits, seq_correct.to(out.q_halt_logits.dtype), reduction="sum"
    )
    metrics["lm_loss"] = lm_loss.detach()
    metrics["q_halt_loss"] = q_halt_loss.detach()
    total = lm_loss + 0.5 * q_halt_loss
    if out.target_q_continue is not None:
        q_continue_loss = F.binary_cross_entropy_with_logits(
            out.q_continue_logits, out.target_q_continue, reduction="sum"
        )
        metrics["q_continue_loss"] = q_continue_loss.detach()
        total = total + 0.5 * q_continue_loss
    if out.kl is not None:
        kl = out.kl.sum()
        metrics["kl_loss"] = kl.detach()
        if kl_weight > 0:
            total = total + kl_weight * kl
    return total, metrics


def halted_loss_sums(carry: Carry, out: StepOutput, loss_type: str) -> dict[str, torch.Tensor]:
    """`lm_loss` and `q_halt_loss` summed over the halted slots only (act_loss sums them over every slot).

    Evaluation reports each example's losses at the step it halts (the reference: the last step's),
    divided by the count of such examples: a per-example mean that does not depend on how many ACT
    steps ran or on the padding slots of the last test batch (pass `halted` without them)."""
    labels = carry.labels
    mask = labels != IGNORE_LABEL
    counts = mask.sum(-1)
    valid = carry.halted & (counts > 0)
    per_slot = (LOSSES[loss_type](out.logits, labels) / counts.clamp_min(1).unsqueeze(-1)).sum(-1)  # (B,)
    seq_correct = (mask & (out.logits.argmax(-1) == labels)).sum(-1) == counts
    q_halt = F.binary_cross_entropy_with_logits(
        out.q_halt_logits, seq_correct.to(out.q_halt_logits.dtype), reduction="none"
    )
    return {"lm_loss": torch.where(valid, per_slot, 0).sum(), "q_halt_loss": torch.where(valid, q_halt, 0).sum()}
