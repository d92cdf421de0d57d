"""`train.init_from` (alias `load_pretrained_decoder`): start a run from trained weights, not a resume.

Sources: one of our checkpoints (a `step-N/` folder or its `state.pt`; its EMA weights when the run
kept them and `train.init_from_ema` is true, as the reference's checkpoints are the EMA copy), or
the paper's weights-only files (a state dict, keys maybe prefixed `_orig_mod.` / `model.`).

A TRM model takes every key. A model with a demo encoder (ETRM) takes the decoder: the puzzle
embedding table is skipped and the encoder keeps its fresh initialisation. A printed report names
the loaded, missing and unexpected keys; a shape that does not fit is an error naming the key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from trm.config import config_from_dict
from trm.model.trm import TRM

PUZZLE_TABLE = "inner.puzzle_emb.weights"
ENCODER_PREFIX = "encoder."


class InitError(RuntimeError):
    """Weights that cannot start this model; the message names the file and the key."""


def _parameter_names(config: dict) -> list[str]:
    """Trainable-parameter names of the model a checkpoint was written by, in EMA order (names only
    depend on the architecture, so the model is built on the meta device with dummy sizes)."""
    arch = config_from_dict(config).arch
    with torch.device("meta"):
        model = TRM(arch, vocab_size=4, seq_len=4, num_puzzle_ids=1, local_batch_size=1, dtype=torch.float32)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def read_weights(path: Path, use_ema: bool) -> tuple[dict[str, torch.Tensor], str]:
    f = path / "state.pt" if path.is_dir() else path
    if not f.is_file():
        raise InitError(
            f"train.init_from={path}: no such checkpoint file (expected one of our step-N folders, "
            "its state.pt, or a weights-only file of the paper's code)"
        )
    try:
        raw = torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a torn or foreign file
        raise InitError(f"train.init_from={path}: {f} is not a readable torch file ({type(e).__name__}: {e})") from None
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        state = dict(raw["model"])
        what = "our checkpoint, raw weights"
        if use_ema and raw.get("ema") and raw.get("config"):
            names = _parameter_names(raw["config"])
            shadow = raw["ema"]["shadow"]
            if len(names) != len(shadow):
                raise InitError(
                    f"train.init_from={path}: {len(shadow)} EMA tensors but the run's model has "
                    f"{len(names)} parameters; pass train.init_from_ema=false to load the raw weights"
                )
            state.update(zip(names, shadow))
            what = "our checkpoint, EMA weights"
        return state, what
    if not isinstance(raw, dict):
        raise InitError(f"train.init_from={path}: expected a state dict, got {type(raw).__name__}")
    fixed = {}
    for k, v in raw.items():
        for prefix in ("_orig_mod.", "model."):
            k = k.removeprefix(prefix)
        fixed[k] = v
    return fixed, "weights-only file"


def load_initial_weights(
    model: TRM, path: Path, use_ema: bool = True, say: Callable[[str], None] = print
) -> dict[str, list[str]]:
    state, what = read_weights(path, use_ema)
    own = model.state_dict()
    encoder_mode = model.encoder is not None
    loaded, unexpected, skipped, bad = [], [], [], []
    take: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k not in own:
            (skipped if encoder_mode and k == PUZZLE_TABLE else unexpected).append(k)
            continue
        if k == PUZZLE_TABLE and v.shape != own[k].shape and v.dim() == 2:
            # New puzzles (fine-tuning on another set): every row starts from the mean, as the reference does.
            v = v.mean(0, keepdim=True).expand_as(own[k]).clone()
        if v.shape != own[k].shape:
            bad.append(f"{k}: file {tuple(v.shape)}, model {tuple(own[k].shape)}")
            continue
        take[k] = v
        loaded.append(k)
    missing = [k for k in own if k not in take]
    required = [k for k in missing if not (encoder_mode and k.startswith(ENCODER_PREFIX))]
    if bad or unexpected or required:
        lines = [
            f"train.init_from={path} ({what}) does not fit this model (arch.* must match the run that wrote "
            "it: hidden_size, num_heads, expansion, L_layers, puzzle_emb_len, pos_encodings, the vocabulary and "
            "sequence length of the data)."
        ]
        if bad:
            lines.append(f"  shapes that differ: {'; '.join(bad[:8])}")
        if required:
            lines.append(f"  keys this model needs that the file lacks: {', '.join(required[:8])}")
        if unexpected:
            lines.append(f"  keys in the file this model does not have: {', '.join(unexpected[:8])}")
        raise InitError("\n".join(lines))
    with torch.no_grad():
        for k, v in take.items():
            own[k].copy_(v)
    fresh = [k for k in missing if k.startswith(ENCODER_PREFIX)]
    shown = ", ".join(fresh[:4]) + (" ..." if len(fresh) > 4 else "")
    say(
        f"init_from {path} ({what}): loaded {len(loaded)} tensors; missing {len(fresh)}"
        f"{' (the demo encoder, freshly initialised: ' + shown + ')' if fresh else ''}; unexpected {len(skipped)}"
        f"{' (' + ', '.join(skipped) + ': skipped, the encoder replaces it)' if skipped else ''}"
    )
    return {"loaded": loaded, "missing": fresh, "unexpected": skipped}
