"""One encoder family: grid encoder (per demo) -> set aggregator (over demos) -> optional bottleneck.

| encoder_type        | grid     | aggregator        | bottleneck                      |
|---------------------|----------|-------------------|---------------------------------|
| standard            | standard | set (cross-attn)  | -                               |
| variational         | standard | set               | VAE on the pooled context       |
| lpn_standard        | lpn      | mean              | -                               |
| lpn_variational     | lpn      | mean              | VAE per demo, then mean         |
| hybrid_standard     | lpn      | set               | -                               |
| hybrid_variational  | lpn      | set               | VAE on the pooled context       |
| recurrent           | standard | set, queries = a latent carried across supervision steps | - |

standard: input and output grids through two embedding tables, `encoder_num_layers` blocks
(`encoder_norm_style`), pooled per demo (`encoder_pooling`), projected. lpn ("Searching Latent
Program Spaces"): a CLS token ahead of the [input; output] tokens, a deep pre-norm stack, the CLS
output (projected) is the demo vector; the CLS reads the tokens unrotated (position-free pooling).
In both, cell i of the input and cell i of the output share a RoPE position, so attention sees
which output cell sits where an input cell was.

The set aggregator's `puzzle_emb_len` queries (learned, or the recurrent state) cross-attend over
the valid demo vectors for `encoder_set_layers` blocks. KL is to N(0, I), summed over latent
dimensions, per item (per demo averaged over valid demos for lpn_variational); the trainer adds
`arch.kl_weight` times it to the loss. Evaluation uses the mean, training a reparameterised draw.

`encoder_pooling=token` (standard only) keeps a table: per demo, the encoded cells (a cell's input
token plus its output token) are averaged per input token value, one slot per vocabulary entry but
PAD (EOS and the 10 colours in ARC); the slots are averaged over the demos that show that value, and
the table fills the first vocab_size - 1 prefix positions, the set aggregator's queries the rest. A
decoder cell of colour c can then read "what c becomes" from slot c by attention instead of decoding
it from one pooled vector: that is what lets a colour mapping never seen in training be read from
the demos (bench/fewshot.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trm.config import ArchConfig, ConfigError
from trm.model.encoders.layers import EncoderBlock, MaskedAttention
from trm.model.layers import CastedEmbedding, CastedLinear, RotaryEmbedding, rms_norm, trunc_normal_init_

# type -> (grid encoder, aggregator, bottleneck, recurrent)
ENCODER_TYPES: dict[str, tuple[str, str, str, bool]] = {
    "standard": ("standard", "set", "none", False),
    "variational": ("standard", "set", "pooled", False),
    "lpn_standard": ("lpn", "mean", "none", False),
    "lpn_variational": ("lpn", "mean", "per_demo", False),
    "hybrid_standard": ("lpn", "set", "none", False),
    "hybrid_variational": ("lpn", "set", "pooled", False),
    "recurrent": ("standard", "set", "none", True),
}
LOGVAR_RANGE = (-10.0, 10.0)


@dataclass
class EncoderOutput:
    context: torch.Tensor  # (B, P, D) the decoder's prefix, unit RMS per token
    kl: torch.Tensor  # (B,) float32, zeros for deterministic encoders
    state: torch.Tensor | None  # (B, P, D) the recurrent encoder's new latent (None otherwise)
    demo_vectors: torch.Tensor  # (B, K, D) per-demo encodings (zeros where demo_mask is False)


def _aligned_rope(rope: RotaryEmbedding, seq_len: int, cls: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for [CLS?] + input cells + output cells, output cell i at input cell i's position."""
    cos, sin = rope()
    cos, sin = cos[:seq_len].repeat(2, 1), sin[:seq_len].repeat(2, 1)
    if cls:  # no rotation for CLS
        cos = torch.cat((torch.ones_like(cos[:1]), cos))
        sin = torch.cat((torch.zeros_like(sin[:1]), sin))
    return cos, sin


class StandardGridEncoder(nn.Module):
    def __init__(self, cfg: ArchConfig, vocab_size: int, seq_len: int, pad_id: int, dtype: torch.dtype) -> None:
        super().__init__()
        D, self.seq_len, self.pad_id = cfg.hidden_size, seq_len, pad_id
        self.scale = D**0.5
        self.input_embed = CastedEmbedding(vocab_size, D, init_std=1.0 / self.scale, dtype=dtype)
        self.output_embed = CastedEmbedding(vocab_size, D, init_std=1.0 / self.scale, dtype=dtype)
        self.rope = RotaryEmbedding(D // cfg.num_heads, seq_len, cfg.rope_theta)
        self.blocks = nn.ModuleList(
            EncoderBlock(D, cfg.num_heads, cfg.expansion, cfg.encoder_norm_style, cfg.rms_norm_eps)
            for _ in range(cfg.encoder_num_layers)
        )
        self.pooling = cfg.encoder_pooling
        if self.pooling == "attention":
            self.pool_query = nn.Parameter(trunc_normal_init_(torch.empty(1, 1, D), std=1.0))
            self.pool_attn = MaskedAttention(D, cfg.num_heads)
        elif self.pooling == "weighted":
            self.pool_score = CastedLinear(D, 1, bias=True)
        elif self.pooling == "token":
            values = torch.tensor([v for v in range(vocab_size) if v != pad_id])
            self.register_buffer("slot_values", values, persistent=False)
            self.slot_embed = nn.Parameter(trunc_normal_init_(torch.empty(len(values), D), std=1.0))
        self.proj = CastedLinear(D, D, bias=True)
        self.eps = cfg.rms_norm_eps

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """inputs, outputs (N, L) -> (N, D)."""
        return self.encode(inputs, outputs)[0]

    def encode(
        self, inputs: torch.Tensor, outputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(N, D) demo vectors, and for token pooling the slots (N, S, D) and which are present (N, S)."""
        x = self.scale * torch.cat((self.input_embed(inputs), self.output_embed(outputs)), dim=1)  # (N, 2L, D)
        valid = torch.cat((inputs, outputs), dim=1) != self.pad_id  # (N, 2L)
        rope = _aligned_rope(self.rope, self.seq_len, cls=False)
        for block in self.blocks:
            x = block(x, key_mask=valid, rope=rope)
        if self.pooling == "token":
            onehot = (inputs.unsqueeze(-1) == self.slot_values).to(x.dtype)  # (N, L, S)
            count = onehot.sum(1)  # (N, S)
            # a cell's input and output tokens together: what this input value became, there
            cells = x[:, : inputs.shape[1]] + x[:, inputs.shape[1] :]  # (N, L, D)
            slots = torch.einsum("nls,nld->nsd", onehot, cells) / count.clamp_min(1.0).unsqueeze(-1)
            slots = rms_norm(self.proj(slots) + self.slot_embed.to(x.dtype), self.eps)  # (N, S, D)
            present = count > 0
            w = present.to(x.dtype).unsqueeze(-1)
            return rms_norm((slots * w).sum(1) / w.sum(1).clamp_min(1.0), self.eps), slots, present
        if self.pooling == "mean":
            w = valid.to(x.dtype).unsqueeze(-1)
            pooled = (x * w).sum(1) / w.sum(1).clamp_min(1.0)
        elif self.pooling == "attention":
            pooled = self.pool_attn(self.pool_query.expand(x.shape[0], 1, -1).to(x.dtype), x, valid)[:, 0]
        else:
            score = self.pool_score(x).squeeze(-1).float().masked_fill(~valid, float("-inf"))
            score = torch.where(valid.any(-1, keepdim=True), score, 0.0)  # all-PAD row: uniform, not NaN
            pooled = (torch.softmax(score, -1).to(x.dtype).unsqueeze(-1) * x).sum(1)
        return rms_norm(self.proj(pooled), self.eps), None, None


class LPNGridEncoder(nn.Module):
    def __init__(self, cfg: ArchConfig, vocab_size: int, seq_len: int, pad_id: int, dtype: torch.dtype) -> None:
        super().__init__()
        D, self.seq_len, self.pad_id = cfg.hidden_size, seq_len, pad_id
        self.scale = D**0.5
        self.embed = CastedEmbedding(vocab_size, D, init_std=1.0 / self.scale, dtype=dtype)
        self.segment = nn.Parameter(trunc_normal_init_(torch.empty(2, D), std=1.0 / self.scale))
        self.cls = nn.Parameter(trunc_normal_init_(torch.empty(D), std=1.0 / self.scale))
        self.rope = RotaryEmbedding(D // cfg.num_heads, seq_len, cfg.rope_theta)
        self.blocks = nn.ModuleList(
            EncoderBlock(D, cfg.num_heads, cfg.expansion, "pre", cfg.rms_norm_eps)
            for _ in range(cfg.encoder_num_layers)
        )
        self.proj = CastedLinear(D, D, bias=True)
        self.eps = cfg.rms_norm_eps

    def forward(self, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        N = inputs.shape[0]
        x_in, x_out = self.embed(inputs), self.embed(outputs)
        seg, cls = self.segment.to(x_in.dtype), self.cls.to(x_in.dtype)
        x = torch.cat((cls.expand(N, 1, -1), x_in + seg[0], x_out + seg[1]), dim=1) * self.scale  # (N, 1 + 2L, D)
        valid = torch.cat(
            (torch.ones_like(inputs[:, :1], dtype=torch.bool), inputs != self.pad_id, outputs != self.pad_id), dim=1
        )
        rope = _aligned_rope(self.rope, self.seq_len, cls=True)
        for block in self.blocks:
            x = block(x, key_mask=valid, rope=rope, free_first=True)
        # The CLS output is mostly its own learned start value; the projection (with a bias) can cancel
        # that shared part, so the demo vectors differ by what the demos say, as the mean-pooled ones do.
        return rms_norm(self.proj(rms_norm(x[:, 0], self.eps)), self.eps)


class SetAggregator(nn.Module):
    """P query tokens (learned, or given: the recurrent state) cross-attend over the valid demo vectors."""

    def __init__(self, cfg: ArchConfig, prefix: int) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.queries = nn.Parameter(trunc_normal_init_(torch.empty(prefix, D), std=1.0))
        self.blocks = nn.ModuleList(
            EncoderBlock(D, cfg.num_heads, cfg.expansion, cfg.encoder_norm_style, cfg.rms_norm_eps)
            for _ in range(cfg.encoder_set_layers)
        )
        self.eps = cfg.rms_norm_eps

    def forward(self, demos: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        q = self.queries.expand(demos.shape[0], -1, -1) if queries is None else queries
        for block in self.blocks:
            q = block(q, memory=demos, key_mask=mask)
        return rms_norm(q, self.eps)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, K, ...) averaged over the demos where mask (B, K) holds."""
    w = mask.to(x.dtype).view(*mask.shape, *([1] * (x.dim() - 2)))
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class MeanAggregator(nn.Module):
    """Masked mean over demos, then a linear map to the P prefix tokens."""

    def __init__(self, cfg: ArchConfig, prefix: int) -> None:
        super().__init__()
        self.prefix, self.eps = prefix, cfg.rms_norm_eps
        self.proj = CastedLinear(cfg.hidden_size, prefix * cfg.hidden_size, bias=True)

    def forward(self, demos: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
        pooled = _masked_mean(demos, mask)
        return rms_norm(self.proj(pooled).view(demos.shape[0], self.prefix, -1), self.eps)


class Gaussian(nn.Module):
    """mu/logvar heads, a reparameterised draw in training (the mean in eval), KL to N(0, I)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mu = CastedLinear(dim, dim, bias=True)
        self.logvar = CastedLinear(dim, dim, bias=True)
        with torch.no_grad():
            # Start nearly deterministic (std e^-2): unit noise at first would drown the context before the
            # decoder has learned to read it; the KL term pulls the variance up as far as it pays.
            self.logvar.weight.zero_()
            self.logvar.bias.fill_(-4.0)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.mu(h).float(), self.logvar(h).float().clamp(*LOGVAR_RANGE)
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return z.to(h.dtype), kl


class DemoEncoder(nn.Module):
    def __init__(
        self,
        cfg: ArchConfig,
        vocab_size: int,
        seq_len: int,
        pad_id: int,
        prefix: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        grid, agg, bottleneck, recurrent = ENCODER_TYPES[cfg.encoder_type]
        self.encoder_type, self.bottleneck, self.recurrent = cfg.encoder_type, bottleneck, recurrent
        self.prefix, self.hidden, self.eps = prefix, cfg.hidden_size, cfg.rms_norm_eps
        self.grid = (StandardGridEncoder if grid == "standard" else LPNGridEncoder)(
            cfg, vocab_size, seq_len, pad_id, dtype
        )
        self.num_slots = 0
        if cfg.encoder_pooling == "token":
            self.num_slots = vocab_size - 1
            if cfg.encoder_type != "standard":
                raise ConfigError(
                    f"arch.encoder_pooling=token is implemented for arch.encoder_type=standard only, got "
                    f"{cfg.encoder_type}"
                )
            if prefix < self.num_slots:
                raise ConfigError(
                    f"arch.encoder_pooling=token writes one prefix token per vocabulary entry but PAD "
                    f"({self.num_slots}); arch.puzzle_emb_len must be >= {self.num_slots}, got {prefix}"
                )
        self.aggregate = (SetAggregator if agg == "set" else MeanAggregator)(cfg, prefix - self.num_slots)
        if bottleneck != "none":
            self.gaussian = Gaussian(cfg.hidden_size)
        if bottleneck == "pooled":
            self.decode = CastedLinear(cfg.hidden_size, prefix * cfg.hidden_size, bias=True)

    def initial_state(self, batch_size: int, detach: bool = True) -> torch.Tensor:
        """The recurrent latent a fresh slot starts from: the set aggregator's learned queries (kept in
        the graph when a step starts from it, so that they learn)."""
        q = self.aggregate.queries.expand(batch_size, -1, -1)
        return q.detach().clone() if detach else q

    def encode_demos(
        self, demo_inputs: torch.Tensor, demo_labels: torch.Tensor, demo_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, K, L) x2, (B, K) -> (B, K, D); only the valid demos go through the grid encoder."""
        B, K, L = demo_inputs.shape
        flat = demo_mask.reshape(-1).nonzero().squeeze(-1)
        vecs = self.grid(demo_inputs.reshape(B * K, L)[flat], demo_labels.reshape(B * K, L)[flat])
        out = vecs.new_zeros(B * K, self.hidden).index_copy(0, flat, vecs)
        return out.view(B, K, self.hidden)

    def forward(
        self,
        demo_inputs: torch.Tensor,
        demo_labels: torch.Tensor,
        demo_mask: torch.Tensor,
        state: torch.Tensor | None = None,
    ) -> EncoderOutput:
        if self.num_slots:
            return self._token_table(demo_inputs, demo_labels, demo_mask)
        return self.aggregate_demos(self.encode_demos(demo_inputs, demo_labels, demo_mask), demo_mask, state)

    def aggregate_demos(
        self, demos: torch.Tensor, demo_mask: torch.Tensor, state: torch.Tensor | None = None
    ) -> EncoderOutput:
        """The demo vectors (B, K, D) of `encode_demos` -> the context: what follows the grid encoder, so
        that a caller holding the demo vectors (the recurrent encoder at evaluation, the collapse
        probe) can aggregate them again without re-encoding the grids. Not for encoder_pooling=token."""
        B = demos.shape[0]
        kl = demos.new_zeros(B, dtype=torch.float32)
        new_state = None
        if self.bottleneck == "per_demo":
            z, kl_each = self.gaussian(demos)  # (B, K, D), (B, K)
            kl = _masked_mean(kl_each, demo_mask)
            context = self.aggregate(z, demo_mask)
        else:
            queries = None
            if self.recurrent:
                queries = self.initial_state(B, detach=False) if state is None else state
                queries = queries.to(demos.dtype)
            context = self.aggregate(demos, demo_mask, queries)
            if self.recurrent:
                new_state = context
            if self.bottleneck == "pooled":
                z, kl = self.gaussian(context.mean(1))
                context = rms_norm(self.decode(z).view(B, self.prefix, self.hidden), self.eps)
        return EncoderOutput(context, kl, new_state, demos)

    def _token_table(
        self, demo_inputs: torch.Tensor, demo_labels: torch.Tensor, demo_mask: torch.Tensor
    ) -> EncoderOutput:
        """encoder_pooling=token: the slot table (B, S, D) averaged over the demos showing each value,
        then the set aggregator's tokens over the demo vectors."""
        B, K, L = demo_inputs.shape
        S, D = self.num_slots, self.hidden
        flat = demo_mask.reshape(-1).nonzero().squeeze(-1)
        vecs, slots, present = self.grid.encode(
            demo_inputs.reshape(B * K, L)[flat], demo_labels.reshape(B * K, L)[flat]
        )
        demos = vecs.new_zeros(B * K, D).index_copy(0, flat, vecs).view(B, K, D)
        slots = slots.new_zeros(B * K, S, D).index_copy(0, flat, slots).view(B, K, S, D)
        seen = present.new_zeros(B * K, S).index_copy(0, flat, present).view(B, K, S)
        # a value no demo shows keeps its slot's default (the mean over the valid demos)
        w = torch.where(seen.any(1, keepdim=True), seen, demo_mask.unsqueeze(-1)).to(slots.dtype).unsqueeze(-1)
        table = rms_norm((slots * w).sum(1) / w.sum(1).clamp_min(1.0), self.eps)  # (B, S, D)
        context = table
        if self.prefix > S:
            context = torch.cat((table, self.aggregate(demos, demo_mask)), dim=1)
        return EncoderOutput(context, demos.new_zeros(B, dtype=torch.float32), None, demos)


def build_encoder(
    cfg: ArchConfig, vocab_size: int, seq_len: int, pad_id: int, prefix: int, dtype: torch.dtype = torch.float32
) -> DemoEncoder:
    if cfg.encoder_type not in ENCODER_TYPES:
        raise ConfigError(
            f"arch.encoder_type={cfg.encoder_type!r} is not an encoder; expected none or one of "
            f"{', '.join(ENCODER_TYPES)}"
        )
    if prefix < 1:
        raise ConfigError(
            f"arch.encoder_type={cfg.encoder_type} writes the decoder's puzzle prefix, but "
            "arch.puzzle_emb_len is 0 and arch.puzzle_emb_ndim gives no prefix; set "
            "arch.puzzle_emb_len >= 1 (16 in the ETRM runs)"
        )
    return DemoEncoder(cfg, vocab_size, seq_len, pad_id, prefix, dtype)
