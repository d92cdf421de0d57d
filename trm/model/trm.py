"""The Tiny Recursive Model and its ACT wrapper (one module, flags for the variants).

One supervision step (paper, Fig. 3):
    x = embed(inputs)                                       # (B, S, D), S = prefix + seq_len
    repeat H_cycles times (the first H_cycles-1 without grad):
        repeat L_cycles times: z = net(z, y + x)            # latent reasoning
        y = net(y, z)                                       # answer refinement
    logits = lm_head(y)[:, prefix:]; (q_halt, q_continue) = q_head(y[:, 0])
y and z ("z_H" and "z_L" in the reference) are detached and carried to the next supervision step.

The ACT wrapper keeps a carry across optimizer steps: slots that halted take a fresh example from
the incoming batch, the others continue theirs (their batch rows are dropped, as in the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from trm.config import ArchConfig
from trm.data.format import IGNORE_LABEL  # the data's label convention; re-exported for the losses
from trm.model.layers import Block, CastedEmbedding, CastedLinear, ReasoningModule, RotaryEmbedding, trunc_normal_init_
from trm.model.puzzle_emb import PuzzleEmbedding

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device, capability: tuple[int, int] | None = None) -> torch.dtype:
    """`auto`: bfloat16 where the GPU runs it natively (compute capability >= 8.0: A100, L40S, H100),
    float32 everywhere else (V100/T4, CPU, MPS). Why not float16 on V100: see README "Precision"."""
    if name != "auto":
        return DTYPES[name]
    if device.type != "cuda":
        return torch.float32
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if capability >= (8, 0) else torch.float32


def prefix_len(cfg: ArchConfig) -> int:
    """Puzzle-prefix positions; the reference derives it from puzzle_emb_ndim when puzzle_emb_len is 0."""
    if cfg.puzzle_emb_len > 0:
        return cfg.puzzle_emb_len
    return math.ceil(cfg.puzzle_emb_ndim / cfg.hidden_size)


@dataclass
class Carry:
    """ACT state of every slot; tensors are replaced each step, never modified in place."""

    z_H: torch.Tensor  # (B, S, D) the answer state y
    z_L: torch.Tensor  # (B, S, D) the latent z
    steps: torch.Tensor  # (B,) int32 supervision steps taken by the slot's current example
    halted: torch.Tensor  # (B,) bool; halted slots are refilled by the next batch
    inputs: torch.Tensor  # (B, L) the slot's current example
    labels: torch.Tensor  # (B, L)
    puzzle_identifiers: torch.Tensor  # (B,)
    # Encoder mode: the slot's demos (re-encoded at every step) and the recurrent encoder's latent.
    demo_inputs: torch.Tensor | None = None  # (B, K, L)
    demo_labels: torch.Tensor | None = None  # (B, K, L)
    demo_mask: torch.Tensor | None = None  # (B, K)
    enc_state: torch.Tensor | None = None  # (B, P, D)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], device: torch.device) -> Carry:
        return cls(**{f.name: state[f.name].to(device) for f in fields(cls) if f.name in state})


@dataclass
class StepOutput:
    logits: torch.Tensor  # (B, L, V) in the forward dtype
    q_halt_logits: torch.Tensor  # (B,) float32
    q_continue_logits: torch.Tensor  # (B,) float32
    target_q_continue: torch.Tensor | None  # (B,) float32, only when training with the Q-continue loss
    kl: torch.Tensor | None = None  # (B,) float32, the variational encoders' KL per slot


@dataclass
class EvalEncoding:
    """A batch's demos encoded once for all the ACT steps of its evaluation: the encoder's whole output,
    or (recurrent encoder) the demo vectors its per-step aggregation starts from."""

    output: Any = None  # EncoderOutput
    demos: torch.Tensor | None = None  # (B, K, D)


class TRMInner(nn.Module):
    def __init__(
        self,
        cfg: ArchConfig,
        vocab_size: int,
        seq_len: int,
        num_puzzle_ids: int,
        local_batch_size: int,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.dtype = dtype
        self.prefix = prefix_len(cfg)
        self.seq_len = seq_len
        D = cfg.hidden_size
        S = seq_len + self.prefix
        self.embed_scale = math.sqrt(D)
        self.embed_tokens = CastedEmbedding(vocab_size, D, init_std=1.0 / self.embed_scale, dtype=dtype)
        self.lm_head = CastedLinear(D, vocab_size, bias=False)
        self.q_head = CastedLinear(D, 2, bias=True)
        # In encoder mode the demo encoder writes the prefix: no table.
        self.puzzle_emb = (
            PuzzleEmbedding(num_puzzle_ids, cfg.puzzle_emb_ndim, local_batch_size)
            if cfg.puzzle_emb_ndim > 0 and cfg.encoder_type == "none"
            else None
        )
        self.rotary = RotaryEmbedding(D // cfg.num_heads, S, cfg.rope_theta) if cfg.pos_encodings == "rope" else None
        self.embed_pos = (
            CastedEmbedding(S, D, init_std=1.0 / self.embed_scale, dtype=dtype)
            if cfg.pos_encodings == "learned"
            else None
        )
        self.L_level = ReasoningModule(
            [Block(D, cfg.num_heads, cfg.expansion, S, cfg.mlp_t, cfg.rms_norm_eps) for _ in range(cfg.L_layers)]
        )
        # Fixed random initial states: buffers, never trained.
        self.register_buffer("H_init", trunc_normal_init_(torch.empty(D), std=1.0).to(dtype))
        self.register_buffer("L_init", trunc_normal_init_(torch.empty(D), std=1.0).to(dtype))
        with torch.no_grad():
            # sigmoid(-5) ~ 0.007: nothing halts early before the Q-head has learned something.
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

    def net(self, h: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        return self.L_level(h, injection, self.rotary() if self.rotary is not None else None)

    def input_embeddings(
        self, inputs: torch.Tensor, puzzle_ids: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embed_tokens(inputs)  # (B, L, D)
        if self.prefix:
            B, D = inputs.shape[0], self.cfg.hidden_size
            if context is not None:  # (B, P, D) at unit RMS: scaled down so it leaves at the tokens' scale
                pe = (context.to(self.dtype) / self.embed_scale).reshape(B, self.prefix * D)
            elif self.puzzle_emb is not None:
                pe = self.puzzle_emb(puzzle_ids).to(self.dtype)  # (B, ndim), zero-padded to prefix*D
                pe = torch.nn.functional.pad(pe, (0, self.prefix * D - pe.shape[-1]))
            else:
                pe = emb.new_zeros(B, self.prefix * D)
            emb = torch.cat((pe.view(B, self.prefix, D), emb), dim=1)
        if self.embed_pos is not None:
            emb = 0.707106781 * (emb + self.embed_pos.embedding_weight.to(self.dtype))  # keep unit variance
        return self.embed_scale * emb

    def initial_state(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        S, D = self.seq_len + self.prefix, self.cfg.hidden_size
        return (self.H_init.expand(batch_size, S, D).to(device), self.L_init.expand(batch_size, S, D).to(device))

    def forward(
        self,
        z_H: torch.Tensor,
        z_L: torch.Tensor,
        inputs: torch.Tensor,
        puzzle_ids: torch.Tensor,
        context: torch.Tensor | None = None,
    ):
        return self.recurse(z_H, z_L, self.input_embeddings(inputs, puzzle_ids, context))

    def recurse(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor):
        """The recursion and the heads (what `train.compile` compiles: fixed shapes, no data-dependent flow)."""
        H, L = self.cfg.H_cycles, self.cfg.L_cycles
        with torch.no_grad():
            for _ in range(H - 1):
                for _ in range(L):
                    z_L = self.net(z_L, z_H + x)
                z_H = self.net(z_H, z_L)
        for _ in range(L):  # the last cycle keeps its graph: L_cycles + 1 net calls are backpropagated
            z_L = self.net(z_L, z_H + x)
        z_H = self.net(z_H, z_L)
        logits = self.lm_head(z_H)[:, self.prefix :]
        q = self.q_head(z_H[:, 0]).float()
        return z_H.detach(), z_L.detach(), logits, q[..., 0], q[..., 1]


class TRM(nn.Module):
    """ACT wrapper: resets and refills halted slots, runs one supervision step, decides halting."""

    def __init__(
        self,
        cfg: ArchConfig,
        vocab_size: int,
        seq_len: int,
        num_puzzle_ids: int,
        local_batch_size: int,
        dtype: torch.dtype,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.halt_max_steps = cfg.halt_max_steps  # online mode runs arch.num_act_steps instead
        self.inner = TRMInner(cfg, vocab_size, seq_len, num_puzzle_ids, local_batch_size, dtype)
        self.encoder = None
        if cfg.encoder_type != "none":
            from trm.model.encoders import build_encoder  # the encoders import this module's config types

            self.encoder = build_encoder(cfg, vocab_size, seq_len, pad_id, self.inner.prefix, dtype)

    def initial_carry(self, batch: dict[str, torch.Tensor]) -> Carry:
        B = batch["inputs"].shape[0]
        device = batch["inputs"].device
        z_H, z_L = self.inner.initial_state(B, device)
        return Carry(
            z_H=z_H,
            z_L=z_L,
            steps=torch.zeros(B, dtype=torch.int32, device=device),
            halted=torch.ones(B, dtype=torch.bool, device=device),
            inputs=torch.zeros_like(batch["inputs"]),
            labels=torch.full_like(batch["labels"], IGNORE_LABEL),
            puzzle_identifiers=torch.zeros_like(batch["puzzle_identifiers"]),
            **self._initial_encoder_carry(batch),
        )

    def _initial_encoder_carry(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.encoder is None:
            return {}
        if "demo_inputs" not in batch:
            raise ValueError(
                "arch.encoder_type is set but the batch has no demos (the trainer must use the "
                "few-shot view, trm.data.fewshot)"
            )
        out = {
            "demo_inputs": torch.zeros_like(batch["demo_inputs"]),
            "demo_labels": torch.zeros_like(batch["demo_labels"]),
            "demo_mask": torch.zeros_like(batch["demo_mask"]),
        }
        if self.encoder.recurrent:
            out["enc_state"] = self.encoder.initial_state(batch["inputs"].shape[0]).to(batch["inputs"].device)
        return out

    @torch.no_grad()
    def eval_encoding(self, batch: dict[str, torch.Tensor]) -> EvalEncoding:
        """The batch's demos encoded once, for every ACT step of an evaluation of that batch: with the
        weights fixed and every slot holding the batch's own demos, each step would recompute exactly
        this. The recurrent encoder refines its state per step, so only its demo vectors are kept."""
        assert self.encoder is not None
        if self.training:
            raise ValueError("eval_encoding is for evaluation (model.eval()): training re-encodes every step")
        di, dl, dm = batch["demo_inputs"], batch["demo_labels"], batch["demo_mask"]
        if self.encoder.recurrent:
            return EvalEncoding(demos=self.encoder.encode_demos(di, dl, dm))
        return EvalEncoding(output=self.encoder(di, dl, dm, None))

    def encode(
        self, carry: Carry, batch: dict[str, torch.Tensor], reset: torch.Tensor, cached: EvalEncoding | None = None
    ) -> tuple[dict, Any]:
        """Refill the reset slots' demos and encode every slot's demos (the whole batch, every step, so
        that every slot sends gradient to the encoder: caching starved it), or at evaluation take
        `cached` (the batch's `eval_encoding`). Returns the carry's new encoder fields and the
        EncoderOutput."""
        assert self.encoder is not None
        r2, r3 = reset.view(-1, 1), reset.view(-1, 1, 1)
        fields_ = {
            "demo_inputs": torch.where(r3, batch["demo_inputs"], carry.demo_inputs),
            "demo_labels": torch.where(r3, batch["demo_labels"], carry.demo_labels),
            "demo_mask": torch.where(r2, batch["demo_mask"], carry.demo_mask),
        }
        state = None
        if self.encoder.recurrent:
            init = self.encoder.initial_state(reset.shape[0], detach=False).to(carry.enc_state.dtype)
            state = torch.where(r3, init, carry.enc_state)
        if cached is None:
            out = self.encoder(fields_["demo_inputs"], fields_["demo_labels"], fields_["demo_mask"], state)
        elif cached.output is not None:
            out = cached.output
        else:
            out = self.encoder.aggregate_demos(cached.demos, fields_["demo_mask"], state)
        if out.state is not None:
            fields_["enc_state"] = out.state.detach()  # truncated BPTT, as the decoder's z_H / z_L
        return fields_, out

    def forward(
        self,
        carry: Carry,
        batch: dict[str, torch.Tensor],
        explore: tuple[torch.Tensor, torch.Tensor] | None = None,
        halt_early: bool = False,
        cached: EvalEncoding | None = None,
    ) -> tuple[Carry, StepOutput]:
        """One supervision step. `explore` = (uniform draws, minimum-step draws) per slot, made by the
        trainer for the whole global batch so that N ranks behave exactly as one process. `cached`:
        `eval_encoding(batch)`, only valid in eval mode with the same `batch` at every step."""
        cfg = self.cfg
        if cached is not None and self.training:
            raise ValueError("a cached demo encoding is for evaluation only: training re-encodes every step")
        reset = carry.halted
        init_H, init_L = self.inner.initial_state(reset.shape[0], reset.device)
        r3 = reset.view(-1, 1, 1)
        z_H = torch.where(r3, init_H, carry.z_H)
        z_L = torch.where(r3, init_L, carry.z_L)
        steps = torch.where(reset, 0, carry.steps)
        r2 = reset.view(-1, 1)
        inputs = torch.where(r2, batch["inputs"], carry.inputs)
        labels = torch.where(r2, batch["labels"], carry.labels)
        puzzle_ids = torch.where(reset, batch["puzzle_identifiers"], carry.puzzle_identifiers)

        enc_fields: dict[str, torch.Tensor] = {}
        context = kl = None
        if self.encoder is not None:
            enc_fields, enc = self.encode(carry, batch, reset, cached)
            context, kl = enc.context, enc.kl
        z_H, z_L, logits, q_halt, q_cont = self.inner(z_H, z_L, inputs, puzzle_ids, context)

        target_q_continue = None
        with torch.no_grad():
            steps = steps + 1
            is_last = steps >= self.halt_max_steps
            halted = is_last
            if self.training and self.halt_max_steps > 1:
                halted = halted | ((q_halt > 0) if cfg.no_ACT_continue else (q_halt > q_cont))
                # Exploration: a random share of slots must run at least U{2..max} steps.
                if explore is not None:
                    u, min_steps = explore
                    halted = halted & (steps >= (u < cfg.halt_exploration_prob) * min_steps)
                if not cfg.no_ACT_continue:
                    # Q-learning bootstrap target from one more (no-grad) step on the updated state.
                    # The reference's TRM file unpacks five values here and crashes; this is the HRM logic.
                    _, _, _, next_halt, next_cont = self.inner(z_H, z_L, inputs, puzzle_ids, context)
                    bootstrap = torch.where(is_last, next_halt, torch.maximum(next_halt, next_cont))
                    target_q_continue = torch.sigmoid(bootstrap)
            elif not self.training and halt_early:
                halted = halted | (q_halt > 0)

        new_carry = Carry(
            z_H=z_H,
            z_L=z_L,
            steps=steps,
            halted=halted,
            inputs=inputs,
            labels=labels,
            puzzle_identifiers=puzzle_ids,
            **enc_fields,
        )
        return new_carry, StepOutput(logits, q_halt, q_cont, target_q_continue, kl)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
