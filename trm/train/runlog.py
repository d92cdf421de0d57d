"""What a run leaves on disk (docs/run-directory.md) and the optional wandb logger.

Only rank 0 writes. summary.json is replaced atomically; metrics.jsonl and train.log are appended.
The wandb logger is a null object when off, so the loop never asks whether logging is on.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from trm.config import Config, ConfigError, config_diff, config_from_dict, to_yaml
from trm.data.format import atomic_write_text


class RunDirError(RuntimeError):
    """The run directory holds something this run must not touch."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON readers choke on them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.summary_path = path / "summary.json"
        self.metrics_path = path / "metrics.jsonl"
        self.config_path = path / "config.yaml"
        self.log_path = path / "train.log"

    def has_results(self) -> bool:
        return any(p.exists() for p in (self.summary_path, self.metrics_path, self.checkpoints))

    def write_config(self, cfg: Config, allow_change: bool) -> None:
        """Freeze the config at the first start; a later start with a different computing config is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.config_path.exists():
            try:
                old = config_from_dict(yaml.safe_load(self.config_path.read_text()) or {})
            except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as e:
                raise RunDirError(f"{self.config_path}: cannot be read back ({e}); move it away or fix it") from None
            diff = config_diff(old, cfg)
            if diff and not allow_change:
                raise RunDirError(
                    f"{self.config_path} was written by an earlier start of this run with a different config: "
                    + "; ".join(diff)
                    + ". Use another run.name, or pass train.resume_ignore_config_change=true "
                    "to continue with the new values."
                )
        atomic_write_text(self.config_path, to_yaml(cfg))

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(_clean(record)) + "\n")

    def append_log(self, line: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def read_summary(self) -> dict[str, Any]:
        try:
            data = json.loads(self.summary_path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write_summary(self, summary: dict[str, Any]) -> None:
        summary = dict(summary, updated_at=_now())
        atomic_write_text(self.summary_path, json.dumps(_clean(summary), indent=2))

    def wandb_id(self) -> str:
        """A stable id, so a resumed run continues the same wandb run."""
        p = self.path / "wandb_id"
        if p.exists():
            return p.read_text().strip()
        run_id = secrets.token_hex(4)
        atomic_write_text(p, run_id + "\n")
        return run_id


class NullLogger:
    def log(self, record: dict[str, Any], step: int) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    def __init__(self, mode: str, project: str, name: str, run_dir: RunDir, config: dict[str, Any]) -> None:
        import wandb  # optional dependency, imported only when asked for

        # wandb reads WANDB_API_KEY from the environment or ~/.netrc itself; we never write it anywhere.
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=project,
            name=name,
            id=run_dir.wandb_id(),
            resume="allow",
            mode=mode,
            dir=str(run_dir.path),
            config=config,
            settings=wandb.Settings(x_disable_stats=True),
        )

    def log(self, record: dict[str, Any], step: int) -> None:
        self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        self.run.finish()


def make_logger(mode: str, project: str, name: str, run_dir: RunDir, config: dict[str, Any]):
    if mode == "off":
        return NullLogger()
    return WandbLogger(mode, project, name, run_dir, config)
