"""What the trainer needs for demo encoders (ETRM) and the online ACT mode, kept out of the loop.

- `EncoderData`: the demo counts of both splits, checked, and the few-shot iterators over them.
- `encoder_param_groups`: the decoder's and the encoder's parameters (`optim.encoder_lr_scale`).
- `online_step`: `train.act_mode=online`, `arch.num_act_steps` forward/backward/optimizer cycles on
  one batch from a fresh carry, no halting (the original mode is the loop's own `train_step`).
- `collapse_metrics`: how much the encoder's context varies across tasks, relative to how much it
  varies across the demos of one task (near 0: the encoder gives every task the same context).
- `probe_accuracy`: accuracy and exact accuracy on a probe's queries, as the evaluation measures them
  (the training tasks' figure of every eval: the ETRM overfit study's success measure).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from trm.config import Config, ConfigError
from trm.data.fewshot import FewShotBatch, FewShotTrainIterator, fewshot_eval_batches, probe_items, read_num_demos
from trm.data.format import Split
from trm.model.trm import TRM
from trm.train.losses import act_loss
from trm.train.metrics import metric_row

if TYPE_CHECKING:
    from trm.train.loop import Trainer


@dataclass
class EncoderData:
    train: Split
    test: Split
    train_demos: np.ndarray
    test_demos: np.ndarray

    @classmethod
    def load(cls, cfg: Config, train: Split, test: Split) -> EncoderData:
        train_root = cfg.data.data_paths[0]
        test_root = cfg.data.data_paths_test[0] if cfg.data.data_paths_test else train_root
        demos = {}
        for name, split, root in (("train", train, train_root), ("test", test, test_root)):
            d = read_num_demos(root, name, len(split.puzzle_identifiers))
            if d is None or not d.any():
                why = "has no all__num_demos.npy" if d is None else "has no demos (all__num_demos.npy is all 0)"
                raise ConfigError(
                    f"arch.encoder_type={cfg.arch.encoder_type} reads each task's demonstration pairs, but the {name} "
                    f"split of '{root}' {why}. Build the data in encoder mode (tools/build_data.py arc "
                    "--demos-in test: the held-out tasks' demos go to the test split, ahead of their queries), or set "
                    "arch.encoder_type=none to train TRM's puzzle embedding."
                )
            demos[name] = d
        return cls(train, test, demos["train"], demos["test"])

    def train_iterator(self, cfg: Config, rank: int, world_size: int) -> FewShotTrainIterator:
        return FewShotTrainIterator(
            self.train,
            self.train_demos,
            cfg.data.max_demos,
            cfg.train.global_batch_size,
            rank,
            world_size,
            cfg.train.seed,
            cfg.eval.eval_interval,
            cfg.data.max_train_groups,
        )

    def eval_batches(self, cfg: Config, global_batch_size: int, rank: int, world_size: int, max_batches: int):  # noqa: ANN201
        return fewshot_eval_batches(
            self.test,
            self.test_demos,
            cfg.data.max_demos,
            global_batch_size,
            rank,
            world_size,
            cfg.data.max_eval_groups,
            max_batches,
            cfg.eval.max_augmentations,
        )

    def probes(self, cfg: Config) -> dict[str, FewShotBatch | None]:
        return {
            "": probe_items(self.test, self.test_demos, cfg.data.max_demos, cfg.data.max_eval_groups),
            "_train": probe_items(self.train, self.train_demos, cfg.data.max_demos, cfg.data.max_train_groups),
        }


def encoder_param_groups(model: TRM, lr_scale: float) -> tuple[list[dict], list[torch.nn.Parameter]]:
    """Adam groups (the encoder's with its own `lr_scale`) and the decoder's parameters."""
    enc = {id(p) for p in model.encoder.parameters()} if model.encoder is not None else set()
    decoder = [p for p in model.parameters() if p.requires_grad and id(p) not in enc]
    encoder = [p for p in model.parameters() if p.requires_grad and id(p) in enc]
    groups = [{"params": decoder, "lr_scale": 1.0}]
    if encoder:
        groups.append({"params": encoder, "lr_scale": lr_scale})
    return groups, decoder


def online_step(tr: Trainer, batch: FewShotBatch) -> torch.Tensor:
    """One batch of the online mode; returns the metric sums of its last cycle (every slot counted)."""
    cfg = tr.cfg
    tr.model.train()
    batch = batch.to(tr.device)
    data = batch.as_dict()
    tr.step += 1
    lr = tr._set_lr()
    carry = tr.model.initial_carry(data)
    num = cfg.arch.num_act_steps
    metrics: dict[str, torch.Tensor] = {}
    for i in range(num):
        carry, out = tr.forward_module(carry, data, None)
        carry = replace(carry, halted=torch.full_like(carry.halted, i == num - 1))  # no halting: fixed steps
        loss, metrics = act_loss(carry, out, cfg.arch.loss_type, cfg.arch.kl_weight)
        (loss / tr.B).backward()
        tr._before_optimizer()
        if cfg.optim.grad_clip_norm > 0 and tr.adam:
            torch.nn.utils.clip_grad_norm_(tr.params, cfg.optim.grad_clip_norm)
        if tr.adam:
            tr.adam.step()
            tr.adam.zero_grad(set_to_none=True)
        if tr.ema:
            tr.ema.update()
    tr.carry = None  # reset every batch: nothing to carry over (or to checkpoint)
    tr._lr = lr
    return metric_row(metrics, tr.device)


def freeze_decoder_grads(tr: Trainer) -> None:
    """`train.freeze_decoder_steps`: while the step is within it, the decoder's gradients are dropped
    (an optimizer skips parameters without a gradient: no update, no weight decay)."""
    if tr.step <= tr.cfg.train.freeze_decoder_steps:
        for p in tr.decoder_params:
            p.grad = None


@torch.no_grad()
def collapse_metrics(model: TRM, probe: FewShotBatch, device: torch.device) -> dict[str, float]:
    """Variance of the context across the probe's tasks (one puzzle each, all its demos), and its mean
    variance across the single-demo contexts of one task; their ratio is the collapse number."""
    enc = model.encoder
    assert enc is not None
    was_training = enc.training
    enc.eval()
    try:
        di, dl, dm = (t.to(device) for t in (probe.demo_inputs, probe.demo_labels, probe.demo_mask))
        B, K, L = di.shape
        full = enc(di, dl, dm, None)
        ctx = full.context.float().flatten(1)  # (B, P*D)
        tasks = ctx.var(0, unbiased=False).mean()
        if enc.num_slots:  # the token table is built from the grids, not from the demo vectors
            single = enc(di.reshape(B * K, 1, L), dl.reshape(B * K, 1, L), dm.reshape(B * K, 1), None).context
        else:  # each demo's vector does not depend on the other demos: aggregate them one at a time
            D = full.demo_vectors.shape[-1]
            single = enc.aggregate_demos(full.demo_vectors.reshape(B * K, 1, D), dm.reshape(B * K, 1)).context
        single = single.float().flatten(1).view(B, K, -1)
        m = dm.float().unsqueeze(-1)  # (B, K, 1)
        n = m.sum(1).clamp_min(1.0)
        mean = (single * m).sum(1) / n
        var = ((single - mean.unsqueeze(1)).square() * m).sum(1) / n  # (B, P*D)
        several = dm.sum(1) >= 2
        demos = var.mean(1)[several].mean() if several.any() else torch.tensor(float("nan"))
    finally:
        enc.train(was_training)
    ratio = (tasks / demos.clamp_min(1e-12)).item() if several.any() else float("nan")
    return {"context_var_tasks": tasks.item(), "context_var_demos": demos.item(), "collapse_ratio": ratio}


@torch.no_grad()
def probe_accuracy(model: TRM, probe: FewShotBatch, device: torch.device, loss_type: str, halt_early: bool) -> dict:
    """Accuracy and exact accuracy of the probe's queries, each at the step it halts (every step unless
    `halt_early`), with the weights the caller has set (the EMA at evaluation): one query of each of
    the first training tasks, the figure a run's summary keeps, where a train log line only averages
    the last interval's halted slots under changing weights."""
    was_training = model.training
    model.eval()
    try:
        data = probe.to(device).as_dict()
        cached = model.eval_encoding(data)
        carry = model.initial_carry(data)
        done = torch.zeros_like(carry.halted)
        sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in ("count", "accuracy", "exact_accuracy")}
        for _ in range(model.halt_max_steps):
            carry, out = model(carry, data, None, halt_early=halt_early, cached=cached)
            newly = carry.halted & ~done
            _, metrics = act_loss(replace(carry, halted=newly), out, loss_type)
            for k in sums:
                sums[k] = sums[k] + metrics[k].to(sums[k].dtype)
            done |= newly
            if halt_early and bool(done.all()):
                break
    finally:
        model.train(was_training)
    count = max(sums.pop("count").item(), 1.0)
    return {k: v.item() / count for k, v in sums.items()}
