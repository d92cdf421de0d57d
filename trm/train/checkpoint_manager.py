"""When the trainer saves a checkpoint, what a checkpoint holds, and how a run resumes from one.

    checkpoints = CheckpointManager(cfg.train, run_dir, env)
    checkpoints.resume(trainer)          # at start, as train.resume says; False: nothing to resume
    checkpoints.start(trainer.step)      # fit() begins: the cadence counts from here
    checkpoints.maybe_save(trainer, time_due)  # after every step
    checkpoints.after_eval(trainer)      # after every evaluation
    checkpoints.save(trainer, wait=True) # on a stop request
    checkpoints.finish(trainer)          # at the end of the run

When (train.*): after every evaluation (`checkpoint_every_eval`), every `checkpoint_every_steps`
steps, every `checkpoint_every_minutes` minutes, on a stop request, and at the end of the run
unless the last step is already saved. The minutes are measured on each rank; the loop makes the
ranks agree on them in the one all-reduce it does per step anyway (`time_due` is this rank's view).

What (checkpoint.py writes the files, verifies them and finds the newest complete one):
    state.pt    (rank 0)   model, EMA, Adam, sign-SGD, step, the LR schedule's length, the sampler's
                           position, the exploration RNG, best and last eval metrics, the step of the
                           last eval, elapsed seconds, attempts, world size, config and its hash
    rank-K.pt   (each rank) the ACT carry, the torch (and CUDA) RNG, and the metric sums of the log
                           interval the checkpoint cut, so that a resumed run logs the same lines
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trm import config as C
from trm.model.trm import Carry
from trm.train import checkpoint as ckpt
from trm.train.dist import DistEnv
from trm.train.runlog import RunDir, RunDirError

if TYPE_CHECKING:
    from trm.train.loop import Trainer


class ResumeError(RuntimeError):
    """A checkpoint that cannot be resumed from as asked."""


class CheckpointManager:
    def __init__(self, tc: C.TrainConfig, run_dir: RunDir, env: DistEnv) -> None:
        self.tc = tc
        self.run_dir = run_dir
        self.env = env
        self.writer = ckpt.CheckpointWriter(
            run_dir.checkpoints, tc.keep_checkpoints, env.rank, env.world_size, background=True
        )
        self.last_step = 0  # the step of the newest save (or of the start), and when it was
        self.last_time = time.monotonic()

    # ------------------------------------------------------------------------------------------
    # when

    def start(self, step: int) -> None:
        self.last_step, self.last_time = step, time.monotonic()

    def time_due(self) -> bool:
        """This rank's clock says a timed checkpoint is due (the ranks then agree on it)."""
        every = self.tc.checkpoint_every_minutes
        return every > 0 and time.monotonic() - self.last_time >= 60 * every

    def maybe_save(self, tr: Trainer, time_due: bool) -> None:
        every = self.tc.checkpoint_every_steps
        if time_due or (every > 0 and tr.step - self.last_step >= every):
            self.save(tr)

    def after_eval(self, tr: Trainer) -> None:
        if self.tc.checkpoint_every_eval:
            self.save(tr)

    def finish(self, tr: Trainer) -> None:
        """Save the last step unless it is saved already, and wait for every write to land."""
        if self.last_step != tr.step or not ckpt.latest(self.run_dir.checkpoints, warn=False):
            self.save(tr, wait=True)
        self.writer.join()

    def save(self, tr: Trainer, wait: bool = False) -> None:
        """Snapshot now (on the training thread); the files are written in the background unless `wait`."""
        self.writer.save(tr.step, main_state(tr) if self.env.is_main else None, rank_state(tr), wait=wait)
        self.last_step, self.last_time = tr.step, time.monotonic()

    # ------------------------------------------------------------------------------------------
    # resume

    def find_resume(self) -> Path | None:
        """The checkpoint train.resume asks for: none (false), the newest complete one (auto, true), a path."""
        mode = self.tc.resume
        root = self.run_dir.checkpoints
        if mode == "false":
            if self.run_dir.has_results():
                raise RunDirError(
                    f"{self.run_dir.path} already holds a run (summary, metrics or checkpoints) and "
                    "train.resume=false would start it over; choose another run.name or resume "
                    "(train.resume=auto)"
                )
            return None
        if mode in ("auto", "true"):
            found = ckpt.latest(root, warn=self.env.is_main)
            if found is None and mode == "true":
                raise ResumeError(f"train.resume=true but {root} holds no complete checkpoint")
            return found
        path = Path(mode)
        if not (path / ckpt.MARKER).is_file():
            raise ResumeError(
                f"train.resume={mode}: not a complete checkpoint folder (expected {path}/"
                f"{ckpt.MARKER} and {path}/state.pt)"
            )
        return path

    def resume(self, tr: Trainer) -> bool:
        """Restore `tr` from the checkpoint train.resume asks for; False when there is none. A damaged
        one is skipped for the next older (auto, true) with a warning; a given path must load."""
        path = self.find_resume()
        if path is None:
            return False
        try:
            path, main, ranks = ckpt.load_with_fallback(
                path, self.run_dir.checkpoints, self.env.rank, tr.device, self.tc.resume in ("auto", "true"), tr.say
            )
        except ckpt.CheckpointDamaged as e:
            raise ResumeError(f"{e}. Move the damaged folders away to start over, or resume from a copy") from None
        if main["config_hash"] != C.config_hash(tr.cfg) and not self.tc.resume_ignore_config_change:
            diff = C.config_diff(C.config_from_dict(main["config"]), tr.cfg)
            raise ResumeError(
                f"checkpoint {path} was written with a different config ({'; '.join(diff)}); "
                "resume with the same config, or pass train.resume_ignore_config_change=true"
            )
        load_main_state(tr, main)
        if main["world_size"] == self.env.world_size and ranks is not None:
            load_rank_state(tr, ranks)
        elif self.env.is_main:
            tr.say(
                f"warning: checkpoint {path} was written by {main['world_size']} ranks, this run has "
                f"{self.env.world_size}: the ACT carry starts afresh (not bit-exact)"
            )
        tr.say(f"resumed from {path} at step {tr.step} (attempt {tr.attempts})")
        return True


# ----------------------------------------------------------------------------------------------
# what: the two halves of a checkpoint, and their way back into a trainer


def main_state(tr: Trainer) -> dict[str, Any]:
    clone: Callable[[Any], Any] = lambda x: ckpt.to_cpu(x, clone=True)  # noqa: E731 - these change in place next step
    return {
        "model": clone(tr.model.state_dict()),
        "ema": clone(tr.ema.state_dict()) if tr.ema else None,
        "adam": clone(tr.adam.state_dict()) if tr.adam else None,
        "sparse": tr.sparse.state_dict() if tr.sparse else None,
        "step": tr.step,
        "total_steps": tr.total_steps,
        # Mid-chunk, the prefetcher knows where the sampler is; it may have read ahead.
        "iterator": tr.batches.resume_state() if tr.batches is not None else tr.iterator.state_dict(),
        "explore_gen": tr.explore_gen.get_state().cpu(),
        "best": dict(tr.best),
        "final": dict(tr.final),
        "last_eval_step": tr.last_eval_step,
        "elapsed_s": tr.elapsed(),
        "attempts": tr.attempts,
        "world_size": tr.env.world_size,
        "config": C.to_dict(tr.cfg),
        "config_hash": C.config_hash(tr.cfg),
    }


def rank_state(tr: Trainer) -> dict[str, Any]:
    state: dict[str, Any] = {
        "carry": tr.carry.state_dict() if tr.carry is not None else None,
        "torch_rng": torch.get_rng_state(),
        **tr.acc.state_dict(),
    }
    if tr.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(tr.device)
    return state


def load_main_state(tr: Trainer, main: dict[str, Any]) -> None:
    tr.model.load_state_dict(main["model"])
    if tr.ema and main["ema"]:
        tr.ema.load_state_dict(main["ema"])
    if tr.adam and main["adam"]:
        tr.adam.load_state_dict(main["adam"])
    if tr.sparse and main["sparse"]:
        tr.sparse.load_state_dict(main["sparse"])
    tr.step = int(main["step"])
    tr.iterator.load_state_dict(main["iterator"])
    tr.explore_gen.set_state(main["explore_gen"].to(tr.explore_gen.get_state().device))
    tr.best, tr.final = main["best"], main["final"]
    tr.last_eval_step = main["last_eval_step"]
    tr.elapsed_before = float(main["elapsed_s"])
    tr.attempts = int(main["attempts"]) + 1


def load_rank_state(tr: Trainer, state: dict[str, Any]) -> None:
    if state["carry"] is not None:
        tr.carry = Carry.from_state_dict(state["carry"], tr.device)
    torch.set_rng_state(state["torch_rng"])
    tr.acc.load_state_dict(state)
    if "cuda_rng" in state and tr.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], tr.device)
