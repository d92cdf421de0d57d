"""Checks the trainer makes before it allocates or trusts a number.

    check_fits_memory(cfg.arch, meta, local_batch_size, device)   # before the model is built
    check_finite_loss(metrics_row, step)                          # after a log interval

A size that cannot fit (e.g. `arch.hidden_size=1000000000`) is refused with the estimate and the
memory this machine has, instead of letting the allocation take the machine down. The estimate is
rough on purpose (within a small factor) and leaves activations out; it only has to catch the absurd.
"""

from __future__ import annotations

import math
import os
import sys

import torch

from trm.config import ArchConfig, ConfigError


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the run stops as failed."""


def _dense_params(arch: ArchConfig, vocab_size: int, seq_len: int) -> float:
    h = float(arch.hidden_size)
    inter = arch.expansion * h * 2 / 3  # SwiGLU's width, before the reference's rounding
    per_layer = 3 * h * inter + (2 * seq_len * seq_len if arch.mlp_t else 4 * h * h)
    return arch.L_layers * per_layer + 2 * vocab_size * h + (seq_len * h if arch.pos_encodings == "learned" else 0)


def estimate_bytes(arch: ArchConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int, local_batch: int) -> float:
    """What the trainer allocates before its first step: weights + gradients + two Adam moments + EMA
    (5 copies, float32), the puzzle table (and its sign-SGD buffer) and the ACT carry (z_H, z_L).
    Activations are left out: they depend on the batch, and a too-large batch fails at the first step
    with the device's own out-of-memory error instead of at allocation."""
    params = _dense_params(arch, vocab_size, seq_len)
    table = float(num_puzzle_ids) * arch.puzzle_emb_ndim
    prefix = arch.puzzle_emb_len or math.ceil(arch.puzzle_emb_ndim / max(arch.hidden_size, 1))
    tokens = float(local_batch) * (seq_len + prefix)
    carry = 2 * tokens * arch.hidden_size
    return 4 * (5 * params + 2 * table + carry)


def available_bytes(device: torch.device) -> tuple[float, str]:
    """(bytes, what) the run can use: the GPU's free memory, else this machine's physical memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free), f"free memory of {torch.cuda.get_device_name(device)}"
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "physical memory of this machine"
    except (ValueError, OSError, AttributeError):
        return math.inf, "memory (unknown)"


def check_fits_memory(
    arch: ArchConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int, local_batch: int, device: torch.device
) -> None:
    need = estimate_bytes(arch, vocab_size, seq_len, num_puzzle_ids, local_batch)
    have, what = available_bytes(device)
    if need > have:
        gib = 2**30
        raise ConfigError(
            f"this model cannot fit: about {need / gib:,.1f} GiB needed (arch.hidden_size={arch.hidden_size}, "
            f"arch.expansion={arch.expansion:g}, arch.L_layers={arch.L_layers}, arch.L_cycles={arch.L_cycles}, "
            f"arch.puzzle_emb_ndim={arch.puzzle_emb_ndim} x {num_puzzle_ids} puzzles, {local_batch} examples of "
            f"{seq_len} tokens per rank) but the {what} is {have / gib:,.1f} GiB. Lower these sizes or the batch "
            f"size; nothing was allocated."
        )


def print_error(error: BaseException) -> None:
    print(f"error: {error}", file=sys.stderr)


def check_finite_loss(loss: float, step: int, lr: float) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLoss(
            f"the training loss became {loss} at step {step} (learning rate {lr:.3g}); the run stops as failed "
            f"instead of training on. Lower optim.lr, set optim.grad_clip_norm (e.g. 1.0), or resume from an "
            f"earlier checkpoint (train.resume=PATH)."
        )
