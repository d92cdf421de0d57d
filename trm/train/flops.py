"""Model FLOPs of a TRM step, counted from the architecture, and the peak of the GPUs users get.

Only matrix products are counted (2 * m * n * k each), as MFU figures usually are: the projections,
the attention scores and their weighted sum, the SwiGLUs, the heads. Norms, RoPE, the loss and the
optimizer are left out (they are memory-bound and small), so MFU here is a slight underestimate.

    per sample and network call (S = puzzle prefix + seq_len, D = hidden, I = SwiGLU width):
      attention block: 2*S*D*3D (qkv) + 4*S*S*D (scores, weighted sum) + 2*S*D*D (out) + 6*S*D*I
      MLP-T block:     6*D*S*I_t (token mixer over the S axis) + 6*S*D*I
      heads:           2*S*D*vocab (lm_head, computed over all S) + 4*D (q_head)
    training step: H*(L+1) forward calls (the first H-1 cycles without grad) + backward of the last
      L+1 calls (2x their forward) + heads forward and backward; the Q-continue variant adds one
      more no-grad step. Evaluation: H*(L+1) calls + heads per ACT step.
"""

from __future__ import annotations

from trm.config import ArchConfig
from trm.model.layers import swiglu_hidden
from trm.model.trm import prefix_len

# Dense peak TFLOP/s by (device-name fragment, dtype) from the vendors' datasheets (SXM parts where
# there are several; no sparsity). float32 means without TF32, which torch leaves off by default.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6},
    "A40": {"bfloat16": 149.7, "float16": 149.7, "float32": 37.4},
    "A10": {"bfloat16": 125.0, "float16": 125.0, "float32": 31.2},
    "V100": {"float16": 125.0, "float32": 15.7},
    "T4": {"float16": 65.0, "float32": 8.1},
}


def peak_tflops(device_name: str, dtype: str) -> float | None:
    for fragment, table in PEAK_TFLOPS.items():
        if fragment in device_name:
            return table.get(dtype)
    return None


def block_flops(arch: ArchConfig, S: int) -> float:
    """Forward FLOPs of one block for one sample."""
    D = arch.hidden_size
    mlp = 6 * S * D * swiglu_hidden(D, arch.expansion)
    if arch.mlp_t:
        return 6 * D * S * swiglu_hidden(S, arch.expansion) + mlp
    return 2 * S * D * 3 * D + 4 * S * S * D + 2 * S * D * D + mlp


def step_flops(arch: ArchConfig, vocab_size: int, seq_len: int) -> dict[str, float]:
    """Per-sample FLOPs: one network call, one training step, one evaluation ACT step."""
    S = seq_len + prefix_len(arch)
    call = arch.L_layers * block_flops(arch, S)
    heads = 2 * S * arch.hidden_size * vocab_size + 4 * arch.hidden_size
    H, L = arch.H_cycles, arch.L_cycles
    forward = H * (L + 1) * call + heads
    train = forward + 2 * ((L + 1) * call + heads)
    if not arch.no_ACT_continue:
        train += forward
    return {"net_call": call, "train_step": train, "eval_step": forward}
