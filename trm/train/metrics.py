"""The trainer's metrics: sums on the device while steps run, per-example means when they are read.

A step (or an evaluation batch) gives the sums of `losses.act_loss` as one float64 row in
METRIC_KEYS order, added up on the device so that no step waits for the host. Reading them
all-reduces the row over ranks once and divides each sum by the examples it was summed over:
accuracies and steps by the examples that halted (`count`), losses by the examples the loss covered
(training: every slot of every step; evaluation: the halted ones, as `count`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist

from trm.train.dist import DistEnv
from trm.train.losses import METRIC_KEYS


def metric_row(metrics: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The sums of one step as a (len(METRIC_KEYS),) float64 tensor; a metric not given is 0."""
    zero = torch.zeros((), dtype=torch.float64, device=device)
    return torch.stack([metrics.get(k, zero).to(torch.float64) for k in METRIC_KEYS])


class MetricSums:
    """Metric rows added up on the device, and the number of steps they came from.

    sums += trainer.train_step(batch)   # one step's row; no host-device sync
    """

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=device)
        self.num_steps = 0

    def __iadd__(self, row: torch.Tensor) -> MetricSums:
        self.sums += row
        self.num_steps += 1
        return self

    def take(self) -> tuple[torch.Tensor, int]:
        """(a copy of the sums, their number of steps), and start over from zero."""
        taken = (self.sums.clone(), self.num_steps)
        self.sums.zero_()
        self.num_steps = 0
        return taken

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"metric_acc": self.sums.clone(), "metric_steps": self.num_steps}

    def load_state_dict(self, state: dict) -> None:
        self.sums.copy_(state["metric_acc"].to(self.sums.device))
        self.num_steps = int(state["metric_steps"])


def reduce_sums(env: DistEnv, sums: torch.Tensor) -> dict[str, float]:
    """The sums of every rank, by name (`sums` is summed in place over ranks)."""
    if env.distributed:
        dist.all_reduce(sums)
    return dict(zip(METRIC_KEYS, sums.tolist()))


def per_example(
    sums: dict[str, float], prefix: str, halted: float, loss_examples: float, skip: Iterable[str] = ()
) -> dict[str, float]:
    """`prefix/<key>` means: losses over `loss_examples`, the rest over the `halted` examples (NaN when
    none halted: unknown, not 0). `count` itself and the keys in `skip` are left out."""
    out: dict[str, float] = {}
    for k, x in sums.items():
        if k == "count" or k in skip:
            continue
        divisor = loss_examples if k.endswith("loss") else halted
        out[f"{prefix}/{k}"] = x / divisor if divisor else math.nan
    return out


def train_means(
    sums: dict[str, float], num_steps: int, global_batch: int, no_act_continue: bool, kl_weight: float, kl: bool
) -> dict[str, float]:
    """The log line of a training interval: `train/halted` (examples halted per step), the per-example
    means, and `train/loss` combined as the step's loss is (lm + 0.5 * Q losses + kl_weight * KL)."""
    count = sums["count"]
    out = {"train/halted": count / num_steps}
    skip = ["q_continue_loss"] if no_act_continue else []
    out.update(per_example(sums, "train", halted=count, loss_examples=global_batch * num_steps, skip=skip))
    q_loss = out["train/q_halt_loss"] + out.get("train/q_continue_loss", 0.0)
    out["train/loss"] = out["train/lm_loss"] + 0.5 * q_loss + kl_weight * out["train/kl_loss"]
    if not kl:
        del out["train/kl_loss"]
    return out


def eval_means(sums: dict[str, float], kl: bool) -> dict[str, float]:
    """The evaluation's per-example means, each example counted at the step it halted (an empty split
    gives 0s). q_continue_loss is a training-only loss; kl_loss exists only with a demo encoder."""
    halted = max(sums["count"], 1.0)
    skip = ["q_continue_loss"] + ([] if kl else ["kl_loss"])
    return per_example(sums, "eval", halted=halted, loss_examples=halted, skip=skip)
