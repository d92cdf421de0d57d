"""Range checks of every config value, run by `trm.config.load_config` before anything else runs.

    check_ranges(cfg)   # raises ConfigError("optim.lr=nan: expected a finite number > 0 ...")

Types are checked while loading; this module checks what the types cannot say: intervals and
sizes >= 1, learning rates finite and > 0, betas and the EMA rate in [0, 1), signal names that
exist, and a run name that is a plain folder name (it becomes `run.root/<name>`, so `../x` would
write outside the root). Sizes that depend on the dataset are checked by the trainer before it
allocates (`trm.train.guards`).
"""

from __future__ import annotations

import math
import re
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trm.config import Config

# Same alphabet as the cluster layer's run names (trm.hpc.spec.NAME_RE): a folder, a job name, a shell word.
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._,=+-]{0,127}$")


@dataclass(frozen=True)
class Range:
    low: float | None = None  # None: unbounded
    high: float | None = None
    low_open: bool = False  # True: low itself is not allowed
    high_open: bool = False
    why: str = ""

    def holds(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.low is not None and (x < self.low or (self.low_open and x == self.low)):
            return False
        return not (self.high is not None and (x > self.high or (self.high_open and x == self.high)))

    def describe(self, integer: bool) -> str:
        what = "an integer" if integer else "a finite number"
        lo = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        if lo and hi:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{self.low:g}, {self.high:g}{right}"
        return f"{what} {lo or hi}" if (lo or hi) else what


AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
POSITIVE = Range(0, low_open=True)
UNIT_OPEN = Range(0, 1, high_open=True)

RANGES: dict[str, Range] = {
    "arch.hidden_size": Range(1, why="width of every layer"),
    "arch.num_heads": AT_LEAST_1,
    "arch.expansion": Range(0, low_open=True, why="MLP width / hidden size"),
    "arch.L_layers": AT_LEAST_1,
    "arch.H_layers": AT_LEAST_0,
    "arch.H_cycles": AT_LEAST_1,
    "arch.L_cycles": AT_LEAST_1,
    "arch.puzzle_emb_ndim": AT_LEAST_0,
    "arch.puzzle_emb_len": AT_LEAST_0,
    "arch.halt_max_steps": AT_LEAST_1,
    "arch.halt_exploration_prob": Range(0, 1),
    "arch.rms_norm_eps": POSITIVE,
    "arch.rope_theta": POSITIVE,
    "data.max_train_groups": Range(0, why="0 keeps every group"),
    "data.max_eval_groups": Range(0, why="0 keeps every group"),
    "optim.lr": Range(0, low_open=True, why="the learning rate, e.g. 1e-4"),
    "optim.lr_min_ratio": Range(0, 1),
    "optim.lr_warmup_steps": AT_LEAST_0,
    "optim.beta1": UNIT_OPEN,
    "optim.beta2": UNIT_OPEN,
    "optim.weight_decay": AT_LEAST_0,
    "optim.puzzle_emb_lr": Range(0, low_open=True, why="the puzzle embedding's learning rate, e.g. 1e-2"),
    "optim.puzzle_emb_weight_decay": AT_LEAST_0,
    "optim.grad_clip_norm": Range(0, why="0 turns clipping off"),
    "train.global_batch_size": AT_LEAST_1,
    "train.epochs": AT_LEAST_1,
    "train.max_steps": Range(0, why="0: no limit besides train.epochs"),
    "train.seed": Range(0, 2**63 - 1),
    "train.ema_rate": UNIT_OPEN,
    "train.checkpoint_every_steps": Range(0, why="0: only at evals and the end"),
    "train.checkpoint_every_minutes": Range(0, why="0: off"),
    "train.keep_checkpoints": Range(2, why="a torn newest checkpoint needs a fallback"),
    "train.time_limit_minutes": Range(0, why="0: no time limit"),
    "train.time_limit_margin_minutes": AT_LEAST_0,
    "eval.eval_interval": Range(1, why="epochs between evaluations"),
    "eval.min_eval_interval": AT_LEAST_0,
    "eval.max_batches": Range(0, why="0: the whole test split"),
    "eval.global_batch_size": Range(0, why="0: the same as train.global_batch_size"),
    "eval.save_predictions": AT_LEAST_0,
    "log.log_interval": Range(1, why="optimizer steps between log lines"),
}


def _error(key: str, value: Any, expected: str) -> Exception:
    from trm.config import ConfigError

    return ConfigError(
        f"{key}={value!r} is not accepted: expected {expected}. Fix it in the config file or "
        f"override it on the command line (e.g. {key}=...)."
    )


def check_ranges(cfg: Config) -> None:
    """Raise ConfigError naming the first value outside its valid range."""
    from trm.config import flat_dict

    flat = flat_dict(cfg)
    for key, rng in RANGES.items():
        if key not in flat:
            continue  # a key another version of the tree does not have
        value = flat[key]
        if not rng.holds(float(value)):
            expected = rng.describe(isinstance(value, int)) + (f" ({rng.why})" if rng.why else "")
            raise _error(key, value, expected)
    for name in cfg.train.signals:
        if not isinstance(getattr(signal, name, None), signal.Signals):
            known = ", ".join(s for s in ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, s))
            raise _error("train.signals", cfg.train.signals, f"a signal name of this system, e.g. {known}")
    if cfg.train.epochs % cfg.eval.eval_interval:
        raise _error(
            "eval.eval_interval",
            cfg.eval.eval_interval,
            f"a divisor of train.epochs ({cfg.train.epochs}): evaluations happen between chunks of that many epochs",
        )
    name = cfg.run.name
    if name and not RUN_NAME_RE.match(name):
        raise _error(
            "run.name",
            name,
            "a plain folder name of letters, digits and . _ , = + - (starting with a "
            "letter or digit, at most 128 characters, no '/'): the run directory is run.root/<run.name>",
        )
    if not cfg.run.root.strip():
        raise _error("run.root", cfg.run.root, "a folder path (default: runs)")
