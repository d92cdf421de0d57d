"""One config tree of dataclasses, loaded strictly from YAML plus dotted command-line overrides.

    cfg = load_config("trm/configs/quickstart.yaml", ["arch.L_layers=4", "lr=1e-4", "+run_name=x"])

Key names follow the paper's code (`H_cycles`, `L_cycles`, `mlp_t`, `puzzle_emb_lr`, ...). The
reference keeps training knobs at the top level (`lr=1e-4 epochs=50000 ema=True`); those names are
accepted as aliases of their place in our tree (see `ALIASES`), so the seeds' command lines work
unchanged. Hydra's `+key=value` (a key absent from its YAML) is accepted and means the same as
`key=value`. Unknown keys and values of the wrong type raise `ConfigError`, naming the key and the
valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from trm.fields import Mismatch, coerce, field_types


class ConfigError(ValueError):
    """A config file or override the user must fix; the message says which key and what is expected."""


# ----------------------------------------------------------------------------------------------
# The tree


@dataclass
class ArchConfig:
    name: Literal["trm"] = "trm"
    hidden_size: int = 512
    num_heads: int = 8
    expansion: float = 4.0
    L_layers: int = 2
    H_layers: int = 0  # read by HRM only; kept so the reference's arch files load
    H_cycles: int = 3  # T in the paper
    L_cycles: int = 6  # n in the paper
    puzzle_emb_ndim: int = 512  # 0 disables the puzzle embedding
    puzzle_emb_len: int = 16  # prefix positions; 0 means ceil(puzzle_emb_ndim / hidden_size)
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    mlp_t: bool = False  # token-mixing MLP instead of self-attention (TRM-MLP)
    no_ACT_continue: bool = True  # True: halt on q_halt > 0 only; False: Q-continue loss as in HRM
    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # auto: bf16 on CUDA GPUs of compute capability >= 8.0 (A100, L40S, H100), fp32 elsewhere (V100, CPU)
    forward_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    loss_type: Literal["stablemax_cross_entropy", "softmax_cross_entropy"] = "stablemax_cross_entropy"
    # ETRM: a demo encoder in place of the puzzle embedding (trm/model/encoders); none = TRM.
    encoder_type: Literal[
        "none",
        "standard",
        "variational",
        "lpn_standard",
        "lpn_variational",
        "hybrid_standard",
        "hybrid_variational",
        "recurrent",
    ] = "none"
    encoder_num_layers: int = 2  # grid-encoder blocks per demo
    encoder_norm_style: Literal["pre", "post"] = "post"  # the standard grid and set encoders (lpn: always pre)
    encoder_pooling: Literal["mean", "attention", "weighted", "token"] = "mean"  # standard grid encoder, per demo
    encoder_set_layers: int = 1  # cross-attention blocks of the demo-set encoder
    kl_weight: float = 0.0  # weight of the variational encoders' KL term in the loss
    num_act_steps: int = 4  # train.act_mode=online: forward/backward/optimizer cycles per batch

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "num_heads",
            "L_layers",
            "H_cycles",
            "L_cycles",
            "halt_max_steps",
            "encoder_num_layers",
            "encoder_set_layers",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"arch.{name} must be >= 1, got {getattr(self, name)}")
        if not self.mlp_t and self.hidden_size % self.num_heads:
            raise ConfigError(
                f"arch.hidden_size ({self.hidden_size}) must be divisible by arch.num_heads ({self.num_heads})"
            )
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ConfigError(f"arch.halt_exploration_prob must be in [0, 1], got {self.halt_exploration_prob}")
        if self.num_act_steps < 1:
            raise ConfigError(
                f"arch.num_act_steps must be >= 1 (the forward/backward/optimizer cycles per batch "
                f"of train.act_mode=online), got {self.num_act_steps}"
            )
        if self.kl_weight < 0:
            raise ConfigError(f"arch.kl_weight must be >= 0, got {self.kl_weight}")


@dataclass
class DataConfig:
    data_paths: list[str] = field(default_factory=lambda: ["data/sudoku-extreme-1k-aug-1000"])
    data_paths_test: list[str] = field(default_factory=list)  # empty: the test split of data_paths
    max_train_groups: int = 0  # > 0: keep only the first N groups (quick overfit tests)
    max_eval_groups: int = 0
    max_demos: int = 10  # encoder mode: demo pairs per item (a puzzle's first ones; padded and masked)

    def __post_init__(self) -> None:
        if self.max_demos < 1:
            raise ConfigError(
                f"data.max_demos must be >= 1 (demo pairs the encoder reads per item), got {self.max_demos}"
            )


@dataclass
class OptimConfig:
    lr: float = 1e-4
    lr_min_ratio: float = 1.0  # 1.0: constant after warmup, as the reference runs
    lr_warmup_steps: int = 2000
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    grad_clip_norm: float = 0.0  # 0: off
    freeze_weights: bool = False  # True: only the puzzle embedding trains
    encoder_lr_scale: float = 1.0  # the demo encoder's learning rate = optim.lr * this

    def __post_init__(self) -> None:
        if self.encoder_lr_scale < 0:
            raise ConfigError(f"optim.encoder_lr_scale must be >= 0, got {self.encoder_lr_scale}")


@dataclass
class TrainConfig:
    global_batch_size: int = 768
    epochs: int = 100000
    max_steps: int = 0  # > 0: stop after this many optimizer steps (smoke tests, benchmarks)
    seed: int = 0
    ema: bool = False
    ema_rate: float = 0.999
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    compile: bool = False  # torch.compile the recursion (falls back to eager with a warning)
    cuda_graphs: bool = False  # with compile on CUDA: replay the compiled recursion as CUDA graphs
    checkpoint_every_steps: int = 0  # 0: only at evals and the end
    checkpoint_every_minutes: float = 0.0
    checkpoint_every_eval: bool = True
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto | true | false | PATH
    resume_ignore_config_change: bool = False
    time_limit_minutes: float = 0.0  # > 0: checkpoint and exit for requeue before this wall time
    time_limit_margin_minutes: float = 3.0
    signals: list[str] = field(default_factory=lambda: ["SIGUSR2", "SIGTERM"])
    init_from: str = ""  # weights to start from (the reference's load_checkpoint); not a resume
    init_from_ema: bool = True  # init_from one of our checkpoints: its EMA weights when it kept them
    act_mode: Literal["original", "online"] = "original"  # online: arch.num_act_steps updates per batch
    freeze_decoder_steps: int = 0  # > 0: only the demo encoder trains for the first N steps

    def __post_init__(self) -> None:
        if self.global_batch_size < 1:
            raise ConfigError(f"train.global_batch_size must be >= 1, got {self.global_batch_size}")
        if self.keep_checkpoints < 2:
            raise ConfigError(
                f"train.keep_checkpoints must be >= 2 (a torn newest needs a fallback), got {self.keep_checkpoints}"
            )
        if self.resume not in ("auto", "true", "false") and not self.resume.strip():
            raise ConfigError("train.resume must be auto, true, false or a checkpoint path")


@dataclass
class EvalConfig:
    eval_interval: int = 10000  # epochs between evaluations
    min_eval_interval: int = 0  # the reference's meaning: skip evals whose 0-based index is below it
    evaluators: list[str] = field(default_factory=list)  # e.g. ["arc"]
    halt_early: bool = False  # stop a test batch once every slot's q_halt > 0 (default: run all steps)
    max_batches: int = 0  # > 0: evaluate on the first N global batches only (intermediate evals)
    full_final: bool = True  # the last evaluation of a run covers the whole test set, whatever max_batches
    global_batch_size: int = 0  # 0: same as train.global_batch_size
    save_predictions: int = 0  # > 0: write the first N test predictions to predictions/step-N.npz
    max_augmentations: int = 0  # > 0, encoder mode: only the first N variants of each held-out task


@dataclass
class LogConfig:
    wandb: Literal["off", "offline", "online"] = "off"
    log_interval: int = 50  # optimizer steps between dense log lines
    progress: bool = True  # tqdm bar (rank 0)


@dataclass
class RunConfig:
    name: str = ""  # empty: derived from the config's hash
    project: str = "trm"
    root: str = "runs"  # run directory = root/name


@dataclass
class Config:
    arch: ArchConfig = field(default_factory=ArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    run: RunConfig = field(default_factory=RunConfig)


# The reference's top-level names (cfg_pretrain.yaml) and where they live in our tree.
ALIASES: dict[str, str] = {
    "data_paths": "data.data_paths",
    "data_paths_test": "data.data_paths_test",
    "max_train_groups": "data.max_train_groups",
    "max_eval_groups": "data.max_eval_groups",
    "global_batch_size": "train.global_batch_size",
    "epochs": "train.epochs",
    "seed": "train.seed",
    "ema": "train.ema",
    "ema_rate": "train.ema_rate",
    "checkpoint_every_eval": "train.checkpoint_every_eval",
    "load_checkpoint": "train.init_from",
    "load_pretrained_decoder": "train.init_from",
    "lr": "optim.lr",
    "lr_min_ratio": "optim.lr_min_ratio",
    "lr_warmup_steps": "optim.lr_warmup_steps",
    "beta1": "optim.beta1",
    "beta2": "optim.beta2",
    "weight_decay": "optim.weight_decay",
    "puzzle_emb_lr": "optim.puzzle_emb_lr",
    "puzzle_emb_weight_decay": "optim.puzzle_emb_weight_decay",
    "grad_clip_norm": "optim.grad_clip_norm",
    "freeze_weights": "optim.freeze_weights",
    "eval_interval": "eval.eval_interval",
    "min_eval_interval": "eval.min_eval_interval",
    "evaluators": "eval.evaluators",
    "run_name": "run.name",
    "project_name": "run.project",
    "arch.loss.loss_type": "arch.loss_type",
    "arch.loss.kl_weight": "arch.kl_weight",
    "arch.encoder_pooling_method": "arch.encoder_pooling",
    "max_demos": "data.max_demos",
    "encoder_lr_scale": "optim.encoder_lr_scale",
    "freeze_decoder_steps": "train.freeze_decoder_steps",
}

# Reference keys that select a Hydra config group or name a Python class: accepted when they name
# what we implement, refused otherwise.
_SELECTORS: dict[str, set[str]] = {
    "arch": {"trm"},
    "arch.name": {"trm", "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"},
    "arch.loss.name": {"losses@ACTLossHead"},
}


# ----------------------------------------------------------------------------------------------
# Loading


_CLI = "overrides"  # key=value words: a command line, a sweep spec's overrides, a jobs.txt line


def _coerce(key: str, value: Any, tp: Any, source: str) -> Any:
    """Check `value` against the annotation `tp` (trm/fields.py); command-line text is parsed by the
    field's type. `source` (a file, "overrides") is named in the error."""
    try:
        return coerce(value, tp, from_text=source is _CLI)  # identity: a file may be named "overrides"
    except Mismatch as e:
        raise ConfigError(f"{source}: {key}: expected {e.expected}, got {value!r}") from None


def canonical_key(key: str) -> str:
    """A key as our tree spells it: `+` (Hydra's "add") dropped, the reference's aliases resolved."""
    key = key.lstrip("+")
    return ALIASES.get(key, key)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
    node[parts[-1]] = value


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"{prefix}{key!r}: keys must be strings")
        full = f"{prefix}{key}"
        if isinstance(value, dict) and canonical_key(full) != full.lstrip("+"):
            out[full] = value  # an alias whose value happens to be a mapping: let the check complain
        elif isinstance(value, dict):
            out.update(_flatten(value, f"{full}."))
        else:
            out[full] = value
    return out


def _build(cls: type, flat: dict[str, Any], prefix: str, sources: dict[str, str]) -> Any:
    """The dataclass `cls` from the dotted keys under `prefix`; `sources`: where each key was set."""
    kwargs: dict[str, Any] = {}
    for name, tp in field_types(cls).items():
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, flat, f"{key}.", sources)
        elif key in flat:
            kwargs[name] = _coerce(key, flat[key], tp, sources[key])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, tp in field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += valid_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _check_known(flat: dict[str, Any], source: str) -> None:
    known = set(valid_keys())
    sections = {k.split(".")[0] for k in known}
    for key in flat:
        if key in known:
            continue
        section = key.split(".")[0]
        if section in sections and "." in key:
            siblings = sorted(k for k in known if k.startswith(section + "."))
            raise ConfigError(f"{source}: unknown key '{key}'. Valid keys in '{section}': {', '.join(siblings)}")
        raise ConfigError(
            f"{source}: unknown key '{key}'. Sections: {', '.join(sorted(sections))}; "
            f"top-level aliases of the reference: {', '.join(sorted(a for a in ALIASES if '.' not in a))}"
        )


def _normalise(flat: dict[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        bare = key.lstrip("+")
        if bare in _SELECTORS:
            if str(value) not in _SELECTORS[bare]:
                raise ConfigError(
                    f"{source}: {bare}={value!r} is not supported; expected one of "
                    f"{', '.join(sorted(_SELECTORS[bare]))}"
                )
            continue
        out[canonical_key(key)] = value
    _check_known(out, source)
    return out


_OVERRIDE = re.compile(r"^[+~]?[A-Za-z_][A-Za-z0-9_.]*=")


def is_override(word: str) -> bool:
    """`key=value` (a dotted key, maybe `+`-prefixed), not a path such as `runs/s/L_layers=1/config.yaml`
    (grid run names hold `=`): a YAML file that exists, or a word with a `/` before its `=`, is a path."""
    if word.endswith((".yaml", ".yml")) and Path(word).is_file():
        return False
    return bool(_OVERRIDE.match(word))


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. arch.L_layers=4)")
        key, value = item.split("=", 1)
        if key.startswith("~"):
            raise ConfigError(f"override '{item}': deleting keys (~key) is not supported")
        out[key.strip()] = value
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> Config:
    """YAML file (may be None) + `base` mapping + `key=value` strings, later ones winning."""
    flat: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"config file '{path}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8 YAML"
            ) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(raw).__name__}")
        flat.update(_normalise(_flatten(raw), str(path)))
    sources = dict.fromkeys(flat, str(path))
    if base:
        from_base = _normalise(_flatten(base), "config")
        flat.update(from_base)
        sources.update(dict.fromkeys(from_base, "config"))
    cli = _normalise(parse_overrides(overrides or []), _CLI)
    flat.update(cli)
    sources.update(dict.fromkeys(cli, _CLI))
    cfg = _build(Config, flat, "", sources)
    from trm.config_checks import check_ranges  # beside this module: the ranges of every value

    check_ranges(cfg)
    return cfg


def check_runnable(cfg: Config) -> None:
    """What the trainer refuses across fields, before it builds anything; the cluster layer calls this
    too, so a sweep is refused at submit rather than on the node."""
    if cfg.eval.eval_interval >= 1 and cfg.train.epochs % cfg.eval.eval_interval:
        raise ConfigError(
            f"train.epochs ({cfg.train.epochs}) must be a multiple of eval.eval_interval "
            f"({cfg.eval.eval_interval}): evaluations happen between chunks of that many epochs"
        )


def config_from_dict(raw: dict[str, Any]) -> Config:
    return load_config(None, None, raw)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# Keys that change how a run is executed but not what it computes: a resume may change them.
RUNTIME_KEYS = {
    "train.device",
    "train.compile",
    "train.cuda_graphs",
    "train.max_steps",
    "train.checkpoint_every_steps",
    "train.checkpoint_every_minutes",
    "train.checkpoint_every_eval",
    "train.keep_checkpoints",
    "train.resume",
    "train.resume_ignore_config_change",
    "train.time_limit_minutes",
    "train.time_limit_margin_minutes",
    "train.signals",
    "log.wandb",
    "log.log_interval",
    "log.progress",
    "run.root",
    "run.name",
    "run.project",
    "eval.max_batches",
    "eval.save_predictions",
    "eval.max_augmentations",
    "eval.full_final",
}


def flat_dict(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in _flatten(to_dict(cfg)).items()}


def config_hash(cfg: Config) -> str:
    """Hash of what the run computes (runtime-only keys excluded), stable across Python versions."""
    semantic = {k: v for k, v in flat_dict(cfg).items() if k not in RUNTIME_KEYS}
    return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(a: Config, b: Config, runtime: bool = False) -> list[str]:
    fa, fb = flat_dict(a), flat_dict(b)
    return [
        f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}"
        for k in sorted(set(fa) | set(fb))
        if fa.get(k) != fb.get(k) and (runtime or k not in RUNTIME_KEYS)
    ]


def frozen_config_diff(path: Path, cfg: Config) -> list[str]:
    """How `cfg` differs in what it computes from the config frozen in `path` (a run's config.yaml,
    trm/rundir.py); [] when nothing is frozen there yet. Raises ConfigError naming the file when it
    cannot be read back (not YAML, not UTF-8, or a config this code refuses)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read back ({e})") from None
    try:
        old = config_from_dict(yaml.safe_load(text) or {})
    except (ConfigError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot be read back ({e})") from None
    return config_diff(old, cfg)
