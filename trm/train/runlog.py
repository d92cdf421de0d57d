"""What a run leaves on disk (docs/run-directory.md) and the optional wandb logger.

Only rank 0 writes. summary.json is replaced atomically; metrics.jsonl and train.log are appended.
The wandb logger is a null object when off, so the loop never asks whether logging is on.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from trm.config import Config, ConfigError, frozen_config_diff, to_yaml
from trm.rundir import RunPaths, append_line, atomic_write_json, atomic_write_text, read_json, utc_now


class RunDirError(RuntimeError):
    """The run directory holds something this run must not touch."""


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON readers choke on them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class RunDir:
    """The trainer's writes into its run directory (the names and formats are trm/rundir.py's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.paths = RunPaths(path)
        self.checkpoints = self.paths.checkpoints
        self.summary_path = self.paths.summary
        self.config_path = self.paths.config

    def has_results(self) -> bool:
        return self.paths.has_results()

    def write_config(self, cfg: Config, allow_change: bool) -> None:
        """Freeze the config at the first start; a later start with a different computing config is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            diff = frozen_config_diff(self.config_path, cfg)
        except ConfigError as e:
            raise RunDirError(f"{e}; move it away or fix it") from None
        if diff and not allow_change:
            raise RunDirError(
                f"{self.config_path} was written by an earlier start of this run with a different config: "
                + "; ".join(diff)
                + ". Use another run.name, or pass train.resume_ignore_config_change=true "
                "to continue with the new values."
            )
        atomic_write_text(self.config_path, to_yaml(cfg))

    def append_metrics(self, record: dict[str, Any]) -> None:
        append_line(self.paths.metrics, json.dumps(_clean(record)))

    def append_log(self, line: str) -> None:
        append_line(self.paths.train_log, line)

    def read_summary(self) -> dict[str, Any]:
        return read_json(self.summary_path)

    def write_summary(self, summary: dict[str, Any]) -> None:
        summary = dict(summary, updated_at=utc_now())
        atomic_write_json(self.summary_path, _clean(summary), trailing_newline=False)

    def wandb_id(self) -> str:
        """A stable id, so a resumed run continues the same wandb run."""
        p = self.paths.wandb_id
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
