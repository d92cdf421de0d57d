"""The training loop: one optimizer step per batch, the ACT carry persisting across batches.

    trainer = Trainer(cfg, dist.init(cfg.train.device)); exit_code = trainer.fit()

Per step (the reference's train_batch): refill halted slots, one supervision step, loss / global
batch, backward (DDP sums gradients over ranks), AdamATan2 + sparse sign-SGD, EMA. Every
`eval.eval_interval` epochs: evaluation with the EMA weights, then a checkpoint. A stop request
(signal or time limit) checkpoints at the next step boundary and returns EXIT_REQUEUE.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from trm import config as C
from trm.data.format import DatasetError, Metadata, read_split, validate_dataset
from trm.data.iterator import Batch, TrainIterator, eval_batches, valid_prefix
from trm.model.trm import TRM, Carry, count_parameters, resolve_dtype
from trm.rundir import EXIT_REQUEUE, EXIT_STOPPED
from trm.train import checkpoint as ckpt
from trm.train import etrm, guards, runlock
from trm.train.compiled import compile_recursion
from trm.train.dist import DistEnv, any_true, broadcast_object, gather_objects
from trm.train.init_weights import InitError, load_initial_weights
from trm.train.losses import METRIC_KEYS, act_loss, halted_loss_sums
from trm.train.optim import EMA, AdamATan2, lr_at
from trm.train.preempt import StopWatch
from trm.train.prefetch import Prefetcher
from trm.train.runlog import RunDir, RunDirError, make_logger


class ResumeError(RuntimeError):
    """A checkpoint that cannot be resumed from as asked."""


def _sum_hook(state, bucket):  # noqa: ANN001 - DDP inspects these annotations: leave them off
    # The loss is already divided by the global batch: gradients are summed, not averaged, over ranks.
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def run_name(cfg: C.Config) -> str:
    if cfg.run.name:
        return cfg.run.name
    data = Path(cfg.data.data_paths[0]).name if cfg.data.data_paths else "run"
    return f"{data}-{C.config_hash(cfg)[:8]}"


def _load_data(cfg: C.Config) -> tuple[Any, Any]:
    if len(cfg.data.data_paths) != 1 or len(cfg.data.data_paths_test) > 1:
        raise C.ConfigError(
            f"data.data_paths: exactly one dataset folder is supported, got {cfg.data.data_paths} "
            "(merging several folders, as the reference can, is not implemented)"
        )
    root = cfg.data.data_paths[0]
    problems = validate_dataset(root)
    test_root = cfg.data.data_paths_test[0] if cfg.data.data_paths_test else root
    if test_root != root:
        problems += [p for p in validate_dataset(test_root) if "/test" in p or "does not exist" in p]
    if problems:
        raise DatasetError(f"dataset '{root}' is not usable:\n  " + "\n  ".join(problems))
    train, test = read_split(root, "train"), read_split(test_root, "test")
    for key in ("vocab_size", "seq_len"):
        if getattr(train.meta, key) != getattr(test.meta, key):
            raise DatasetError(
                f"{key} differs between the train split ({getattr(train.meta, key)}) and the "
                f"test split ({getattr(test.meta, key)}) of '{root}'"
            )
    return train, test


class Trainer:
    def __init__(self, cfg: C.Config, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.device = env.device
        tc = cfg.train
        C.check_runnable(cfg)
        self.train_split, self.test_split = _load_data(cfg)
        meta: Metadata = self.train_split.meta
        self.B = tc.global_batch_size
        if self.B % env.world_size:
            raise C.ConfigError(
                f"train.global_batch_size ({self.B}) must be divisible by the number of ranks ({env.world_size})"
            )
        self.local_B = self.B // env.world_size
        self.eval_B = cfg.eval.global_batch_size or self.B
        if self.eval_B % env.world_size:
            raise C.ConfigError(
                f"eval.global_batch_size ({self.eval_B}) must be divisible by the number of ranks ({env.world_size})"
            )
        self.dtype = resolve_dtype(cfg.arch.forward_dtype, self.device)
        # Encoder mode (ETRM): the few-shot view of the data; checked before anything is built.
        self.fewshot = (
            etrm.EncoderData.load(cfg, self.train_split, self.test_split) if cfg.arch.encoder_type != "none" else None
        )

        guards.check_fits_memory(
            cfg.arch, meta.vocab_size, meta.seq_len, max(1, meta.num_puzzle_identifiers), self.local_B, self.device
        )  # before allocating: an absurd size must not take the machine
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        self.model = TRM(
            cfg.arch,
            meta.vocab_size,
            meta.seq_len,
            max(1, meta.num_puzzle_identifiers),
            self.local_B,
            self.dtype,
            pad_id=meta.pad_id,
        ).to(self.device)
        if tc.act_mode == "online":
            self.model.halt_max_steps = cfg.arch.num_act_steps  # evaluation runs the steps training ran
        self.num_params = count_parameters(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        oc = cfg.optim
        groups, self.decoder_params = etrm.encoder_param_groups(self.model, oc.encoder_lr_scale)
        self.adam = (
            None
            if oc.freeze_weights
            else AdamATan2(groups, lr=0.0, betas=(oc.beta1, oc.beta2), weight_decay=oc.weight_decay)
        )
        emb = self.model.inner.puzzle_emb
        from trm.model.puzzle_emb import SignSGD  # local: only the trainer builds optimizers

        self.sparse = SignSGD(emb, 0.0, oc.puzzle_emb_weight_decay) if emb is not None else None
        self.ema = EMA(self.params, tc.ema_rate) if tc.ema and not oc.freeze_weights else None
        if oc.freeze_weights:
            for p in self.params:
                p.requires_grad_(False)
        self.forward_module: torch.nn.Module = self.model
        if env.distributed and not oc.freeze_weights:
            ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, broadcast_buffers=False, bucket_cap_mb=25, device_ids=None
            )
            ddp.register_comm_hook(None, _sum_hook)
            self.forward_module = ddp
        if tc.compile:
            compile_recursion(self.model.inner, tc.cuda_graphs, lambda line: self.say(line))
        self.batches: Prefetcher | None = None  # the chunk's batches, when the loop is running

        self.iterator = (
            TrainIterator(
                self.train_split,
                self.B,
                env.rank,
                env.world_size,
                tc.seed,
                cfg.eval.eval_interval,
                cfg.data.max_train_groups,
            )
            if self.fewshot is None
            else self.fewshot.train_iterator(cfg, env.rank, env.world_size)
        )
        self.num_chunks = tc.epochs // cfg.eval.eval_interval
        self.total_steps = int(tc.epochs * self.iterator.examples_per_epoch() / self.B)
        if self.total_steps < 1:
            raise C.ConfigError(
                f"train.epochs={tc.epochs} over {self.iterator.num_groups} groups gives no full batch "
                f"of {self.B}; raise train.epochs or lower train.global_batch_size"
            )
        self.stop_at = min(self.total_steps, tc.max_steps) if tc.max_steps > 0 else self.total_steps
        # The step the run will end at: the reference's step count includes the partial batch each chunk
        # drops, so the chunks' own batches bound it too. This is the denominator users see.
        self.final_step = min(self.stop_at, self.num_chunks * self.iterator.batches_in_chunk())
        # Exploration draws for the whole global batch, from one generator that every rank shares.
        self.explore_gen = torch.Generator(device=self.device)
        self.explore_gen.manual_seed(tc.seed + 1)
        torch.manual_seed(tc.seed + env.rank)  # whatever else draws from the global RNG: per rank, as the reference

        self.step = 0
        self.carry: Carry | None = None
        self.best: dict[str, dict[str, float]] = {}
        self.final: dict[str, float] = {}
        self.elapsed_before = 0.0
        self.attempts = 1
        self.last_eval_step = -1
        self.name = run_name(cfg)
        self.run_dir = RunDir(Path(cfg.run.root) / self.name)
        self.run_lock = runlock.acquire_run_lock(self.run_dir.path, env)  # one trainer per run directory
        try:
            self._init_run_state(cfg, env)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Free the run directory for the next trainer (fit() does it when it returns)."""
        if getattr(self, "run_lock", None) is not None:
            self.run_lock.release()

    def _init_run_state(self, cfg: C.Config, env: DistEnv) -> None:
        tc = cfg.train
        self.acc = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=self.device)
        self.acc_steps = 0
        self.writer = ckpt.CheckpointWriter(
            self.run_dir.checkpoints, tc.keep_checkpoints, env.rank, env.world_size, background=True
        )
        self._resume()
        if env.is_main:
            self.run_dir.write_config(cfg, allow_change=tc.resume_ignore_config_change)
            self.logger = make_logger(cfg.log.wandb, cfg.run.project, self.name, self.run_dir, C.to_dict(cfg))
        else:
            self.logger = make_logger("off", "", "", self.run_dir, {})

    # ------------------------------------------------------------------------------------------
    # state

    def _main_state(self) -> dict[str, Any]:
        clone = lambda x: ckpt.to_cpu(x, clone=True)  # noqa: E731 - these change in place next step
        return {
            "model": clone(self.model.state_dict()),
            "ema": clone(self.ema.state_dict()) if self.ema else None,
            "adam": clone(self.adam.state_dict()) if self.adam else None,
            "sparse": self.sparse.state_dict() if self.sparse else None,
            "step": self.step,
            "total_steps": self.total_steps,
            "iterator": self.batches.resume_state() if self.batches is not None else self.iterator.state_dict(),
            "explore_gen": self.explore_gen.get_state().cpu(),
            "best": dict(self.best),
            "final": dict(self.final),
            "last_eval_step": self.last_eval_step,
            "elapsed_s": self._elapsed(),
            "attempts": self.attempts,
            "world_size": self.env.world_size,
            "config": C.to_dict(self.cfg),
            "config_hash": C.config_hash(self.cfg),
        }

    def _rank_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "carry": self.carry.state_dict() if self.carry is not None else None,
            "torch_rng": torch.get_rng_state(),
            # the metrics of a log interval cut by the checkpoint, so resumed lines match
            "metric_acc": self.acc.clone(),
            "metric_steps": self.acc_steps,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_checkpoint(self, wait: bool = False) -> None:
        self.writer.save(self.step, self._main_state() if self.env.is_main else None, self._rank_state(), wait=wait)

    def _find_resume(self) -> Path | None:
        mode = self.cfg.train.resume
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

    def _resume(self) -> None:
        path = self._find_resume()
        if path is None:
            if self.cfg.train.init_from:
                load_initial_weights(self.model, Path(self.cfg.train.init_from), self.cfg.train.init_from_ema, self.say)
                if self.ema:
                    self.ema = EMA(self.params, self.cfg.train.ema_rate)
            return
        try:
            path, main, rank_state = ckpt.load_with_fallback(
                path,
                self.run_dir.checkpoints,
                self.env.rank,
                self.device,
                self.cfg.train.resume in ("auto", "true"),
                say=self.say,
            )
        except ckpt.CheckpointDamaged as e:
            raise ResumeError(f"{e}. Move the damaged folders away to start over, or resume from a copy") from None
        if main["config_hash"] != C.config_hash(self.cfg) and not self.cfg.train.resume_ignore_config_change:
            diff = C.config_diff(C.config_from_dict(main["config"]), self.cfg)
            raise ResumeError(
                f"checkpoint {path} was written with a different config ({'; '.join(diff)}); "
                "resume with the same config, or pass train.resume_ignore_config_change=true"
            )
        self.model.load_state_dict(main["model"])
        if self.ema and main["ema"]:
            self.ema.load_state_dict(main["ema"])
        if self.adam and main["adam"]:
            self.adam.load_state_dict(main["adam"])
        if self.sparse and main["sparse"]:
            self.sparse.load_state_dict(main["sparse"])
        self.step = int(main["step"])
        self.iterator.load_state_dict(main["iterator"])
        self.explore_gen.set_state(main["explore_gen"].to(self.explore_gen.get_state().device))
        self.best, self.final = main["best"], main["final"]
        self.last_eval_step = main["last_eval_step"]
        self.elapsed_before = float(main["elapsed_s"])
        self.attempts = int(main["attempts"]) + 1
        if main["world_size"] == self.env.world_size and rank_state is not None:
            if rank_state["carry"] is not None:
                self.carry = Carry.from_state_dict(rank_state["carry"], self.device)
            torch.set_rng_state(rank_state["torch_rng"])
            self.acc.copy_(rank_state["metric_acc"].to(self.device))
            self.acc_steps = int(rank_state["metric_steps"])
            if "cuda_rng" in rank_state and self.device.type == "cuda":
                torch.cuda.set_rng_state(rank_state["cuda_rng"], self.device)
        elif self.env.is_main:
            self.say(
                f"warning: checkpoint {path} was written by {main['world_size']} ranks, this run has "
                f"{self.env.world_size}: the ACT carry starts afresh (not bit-exact)"
            )
        self.say(f"resumed from {path} at step {self.step} (attempt {self.attempts})")

    # ------------------------------------------------------------------------------------------
    # helpers

    def say(self, line: str) -> None:
        if self.env.is_main:
            tqdm.write(line)
            self.run_dir.path.mkdir(parents=True, exist_ok=True)
            self.run_dir.append_log(line)

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self._t_start)

    def _draw_explore(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.cfg.arch.halt_max_steps <= 1:
            return None
        u = torch.rand(self.B, device=self.device, generator=self.explore_gen)
        k = torch.randint(
            2,
            self.cfg.arch.halt_max_steps + 1,
            (self.B,),
            device=self.device,
            generator=self.explore_gen,
            dtype=torch.int32,
        )
        sl = slice(self.env.rank * self.local_B, (self.env.rank + 1) * self.local_B)
        return u[sl], k[sl]

    def _set_lr(self) -> float:
        oc = self.cfg.optim
        lr = lr_at(self.step, oc.lr, oc.lr_warmup_steps, self.total_steps, oc.lr_min_ratio)
        if self.adam:
            for g in self.adam.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
        if self.sparse:
            self.sparse.lr = lr_at(self.step, oc.puzzle_emb_lr, oc.lr_warmup_steps, self.total_steps, oc.lr_min_ratio)
        return lr

    @staticmethod
    def _stack(metrics: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return torch.stack([metrics.get(k, zero).to(torch.float64) for k in METRIC_KEYS])

    # ------------------------------------------------------------------------------------------
    # one step

    def _before_optimizer(self) -> None:
        etrm.freeze_decoder_grads(self)

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step; returns the metric sums as a device tensor (no host-device sync here:
        the caller accumulates them on the device and reads them at the log interval)."""
        if self.cfg.train.act_mode == "online":
            return etrm.online_step(self, batch)
        loss, metrics = self.forward_step(batch)
        self.backward_step(loss)
        self.optimizer_step()
        return self._stack(metrics, self.device)

    # The three phases, separately callable so that bench/train_speed.py can time each.
    def forward_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.model.train()
        batch = batch.to(self.device)  # a no-op for prefetched batches
        data = batch.as_dict()
        if self.carry is None:
            self.carry = self.model.initial_carry(data)
        self.step += 1
        self._lr = self._set_lr()
        self.carry, out = self.forward_module(self.carry, data, self._draw_explore())
        return act_loss(self.carry, out, self.cfg.arch.loss_type, self.cfg.arch.kl_weight)

    def backward_step(self, loss: torch.Tensor) -> None:
        (loss / self.B).backward()
        self._before_optimizer()

    def optimizer_step(self) -> None:
        if self.cfg.optim.grad_clip_norm > 0 and self.adam:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip_norm)
        if self.adam:
            self.adam.step()
            self.adam.zero_grad(set_to_none=True)
        if self.sparse:
            self.sparse.step()
            self.sparse.zero_grad()
        if self.ema:
            self.ema.update()

    def _reduce_train(self, acc: torch.Tensor, num_steps: int) -> dict[str, float]:
        if self.env.distributed:
            dist.all_reduce(acc)
        v = dict(zip(METRIC_KEYS, acc.tolist()))
        count = v.pop("count")
        out: dict[str, float] = {"train/halted": count / num_steps}
        for k, x in v.items():
            if k == "q_continue_loss" and self.cfg.arch.no_ACT_continue:
                continue
            # Accuracies are over the slots that halted; in an interval where none did they are unknown.
            out[f"train/{k}"] = x / (self.B * num_steps) if k.endswith("loss") else (x / count if count else math.nan)
        q_loss = out["train/q_halt_loss"] + out.get("train/q_continue_loss", 0.0)
        out["train/loss"] = out["train/lm_loss"] + 0.5 * q_loss + self.cfg.arch.kl_weight * out["train/kl_loss"]
        if self.fewshot is None:
            del out["train/kl_loss"]
        out["train/lr"] = self._lr
        return out

    # ------------------------------------------------------------------------------------------
    # evaluation

    @torch.inference_mode()
    def evaluate(self, final: bool = False) -> dict[str, float]:
        """Metrics over the test split with the EMA weights: each example's at the step it halts (all
        at arch.halt_max_steps unless eval.halt_early), summed over the valid (non-padding) slots and
        divided by their count, as the reference reports its last step. Intermediate evaluations
        cover the first eval.max_batches batches; a `final` one the whole split (eval.full_final)."""
        cfg = self.cfg
        max_batches = 0 if final and cfg.eval.full_final else cfg.eval.max_batches
        self.model.eval()
        if self.ema:
            self.ema.swap()
        evaluators = self._evaluators() if self.env.is_main else []
        for e in evaluators:
            e.begin()
        acc = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=self.device)
        saved: list[dict[str, np.ndarray]] = []
        try:
            batches = self._eval_batches(max_batches)
            for batch in Prefetcher(batches, self.device, lambda: None, lookahead=self.device.type == "cuda"):
                batch = valid_prefix(batch)
                data = batch.as_dict()
                carry = self.model.initial_carry(data)
                cached = self.model.eval_encoding(data) if self.model.encoder is not None else None
                done = torch.zeros_like(batch.valid)
                preds = torch.zeros_like(batch.inputs)
                q_halt = torch.zeros(batch.valid.shape, dtype=torch.float32, device=self.device)
                for _ in range(self.model.halt_max_steps):
                    carry, out = self.model(carry, data, None, halt_early=cfg.eval.halt_early, cached=cached)
                    newly = carry.halted & ~done
                    halted = replace(carry, halted=newly & batch.valid)  # padding slots never count
                    _, metrics = act_loss(halted, out, cfg.arch.loss_type)
                    metrics.update(halted_loss_sums(halted, out, cfg.arch.loss_type))
                    acc += self._stack(metrics, self.device)
                    preds = torch.where(newly.view(-1, 1), out.logits.argmax(-1).to(preds.dtype), preds)
                    q_halt = torch.where(newly, out.q_halt_logits, q_halt)
                    done |= newly
                    # Without halt_early every slot halts at the last step: no need to ask (a sync) each step.
                    if cfg.eval.halt_early and bool(done.all()):
                        break
                if evaluators or cfg.eval.save_predictions:
                    rows = {
                        "inputs": batch.inputs,
                        "labels": batch.labels,
                        "preds": preds,
                        "puzzle_identifiers": batch.puzzle_identifiers,
                        "q_halt_logits": q_halt,
                    }
                    mine = {k: v[batch.valid].cpu().numpy() for k, v in rows.items()}
                    parts = gather_objects(self.env, mine)
                    if self.env.is_main:
                        merged = {k: np.concatenate([p[k] for p in parts]) for k in mine}
                        for e in evaluators:
                            e.update(**merged)
                        kept = sum(len(s["preds"]) for s in saved)
                        if cfg.eval.save_predictions and kept < cfg.eval.save_predictions:
                            saved.append(merged)
            extra = self._encoder_metrics() if self.fewshot is not None and self.env.is_main else {}
        finally:
            if self.ema:
                self.ema.swap()
        if self.env.distributed:
            dist.all_reduce(acc)
        v = dict(zip(METRIC_KEYS, acc.tolist()))
        count = max(v.pop("count"), 1.0)
        # q_continue_loss is a training-only loss; kl_loss exists only with a demo encoder.
        out = {
            f"eval/{k}": x / count
            for k, x in v.items()
            if k != "q_continue_loss" and not (k == "kl_loss" and self.fewshot is None)
        }
        out.update(extra)
        for e in evaluators:
            for k, x in e.result(self.run_dir.path / f"evaluator_{e.name}_step_{self.step}").items():
                out[f"eval/{e.name}/{k}"] = float(x)
        if self.env.is_main and saved:
            self._save_predictions(saved)
        return broadcast_object(self.env, out)

    def _eval_batches(self, max_batches: int) -> Any:
        cfg = self.cfg
        if self.fewshot is not None:
            return self.fewshot.eval_batches(cfg, self.eval_B, self.env.rank, self.env.world_size, max_batches)
        return eval_batches(
            self.test_split, self.eval_B, self.env.rank, self.env.world_size, cfg.data.max_eval_groups, max_batches
        )

    def _encoder_metrics(self) -> dict[str, float]:
        """The encoder-collapse diagnostic on fixed probes of held-out and of training tasks, and the
        training tasks' accuracy (`eval/accuracy_train`, `eval/exact_accuracy_train`)."""
        out: dict[str, float] = {}
        for suffix, probe in self.fewshot.probes(self.cfg).items():
            if probe is not None:
                for k, x in etrm.collapse_metrics(self.model, probe, self.device).items():
                    out[f"eval/{k}{suffix}"] = x
            if probe is not None and suffix == "_train":
                acc = etrm.probe_accuracy(
                    self.model, probe, self.device, self.cfg.arch.loss_type, self.cfg.eval.halt_early
                )
                out.update({f"eval/{k}_train": x for k, x in acc.items()})
        return out

    def _evaluators(self) -> list[Any]:
        if not self.cfg.eval.evaluators:
            return []
        from trm.evaluators import get_evaluator  # optional module (dataset-specific scoring)

        root = self.cfg.data.data_paths_test[0] if self.cfg.data.data_paths_test else self.cfg.data.data_paths[0]
        return [get_evaluator(name, root, self.test_split.meta) for name in self.cfg.eval.evaluators]

    def _save_predictions(self, saved: list[dict[str, np.ndarray]]) -> None:
        n = self.cfg.eval.save_predictions
        d = self.run_dir.path / "predictions"
        d.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.concatenate([s[k] for s in saved])[:n] for k in saved[0]}
        tmp = d / f".step-{self.step:08d}.npz"
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        tmp.replace(d / f"step-{self.step:08d}.npz")

    def _record_eval(self, metrics: dict[str, float]) -> None:
        self.final = dict(metrics)
        for k, x in metrics.items():
            if k.endswith("/steps") or x is None or (isinstance(x, float) and math.isnan(x)):
                continue
            better = (lambda a, b: a < b) if "loss" in k else (lambda a, b: a > b)
            if k not in self.best or better(x, self.best[k]["value"]):
                self.best[k] = {"value": x, "step": self.step}
        self.last_eval_step = self.step

    # ------------------------------------------------------------------------------------------
    # the loop

    def _summary(self, state: str) -> dict[str, Any]:
        elapsed = self._elapsed()
        # total_steps: the step this run ends at (its own step once done); schedule_steps: the LR schedule's.
        total = self.step if state == "done" else self.final_step
        return {
            "run_name": self.name,
            "state": state,
            "step": self.step,
            "total_steps": total,
            "schedule_steps": self.total_steps,
            "stop_at": self.stop_at,
            "epoch": self.iterator.epoch(),
            "num_params": self.num_params,
            "config_hash": C.config_hash(self.cfg),
            "world_size": self.env.world_size,
            "device": self.device.type,
            "wall_time_s": elapsed,
            "gpu_hours": elapsed * self.env.world_size / 3600 if self.device.type == "cuda" else 0.0,
            "samples_per_s": self.step * self.B / elapsed if elapsed > 0 else 0.0,
            "attempts": self.attempts,
            "final": self.final,
            "best": self.best,
        }

    def _write_summary(self, state: str) -> None:
        if self.env.is_main:
            self.run_dir.write_summary(self._summary(state))

    def _log_eval(self, metrics: dict[str, float]) -> None:
        self._record_eval(metrics)
        if self.env.is_main:
            record = {
                "event": "eval",
                "step": self.step,
                "epoch": self.iterator.epoch(),
                "time_s": self._elapsed(),
                **metrics,
            }
            self.run_dir.append_metrics(record)
            self.logger.log(metrics, self.step)
            shown = " ".join(f"{k.removeprefix('eval/')} {v:.4f}" for k, v in metrics.items())
            self.say(f"eval  step {self.step:>7} ep {self.iterator.epoch():.1f} | {shown}")
        self._write_summary("running")

    def fit(self) -> int:
        cfg, env = self.cfg, self.env
        self._t_start = time.monotonic()
        watch = StopWatch(cfg.train.signals, cfg.train.time_limit_minutes, cfg.train.time_limit_margin_minutes)
        bar = tqdm(
            total=self.final_step,
            initial=self.step,
            disable=not (cfg.log.progress and env.is_main),
            dynamic_ncols=True,
            unit="step",
            mininterval=1.0 if _isatty() else 60.0,
        )
        self.say(
            f"run {self.name}: {self.num_params:,} parameters, {env.world_size} rank(s) on {self.device.type} "
            f"({str(self.dtype).removeprefix('torch.')}), {self.final_step} steps of {self.B} "
            f"({self.total_steps} for {cfg.train.epochs} epochs), run dir {self.run_dir.path}"
        )
        if self.dtype == torch.float16:
            self.say(
                "warning: arch.forward_dtype=float16 runs without loss scaling: gradients under float16's "
                "range (6e-8) become zero. auto picks bfloat16 on GPUs that have it and float32 elsewhere"
            )
        self._write_summary("running")
        t_log = time.monotonic()
        last_ckpt_step, t_ckpt = self.step, time.monotonic()
        try:
            while self.step < self.stop_at and self.iterator.chunk < self.num_chunks:
                chunk = self.iterator.chunk
                self.batches = Prefetcher(
                    self.iterator.chunk_batches(),
                    self.device,
                    self.iterator.state_dict,
                    lookahead=self.device.type == "cuda",
                )
                for batch in self.batches:
                    self.acc += self.train_step(batch)
                    self.acc_steps += 1
                    bar.update(1)
                    if self.step % cfg.log.log_interval == 0 or self.step >= self.stop_at:
                        self._log_train(time.monotonic() - t_log, bar)
                        t_log = time.monotonic()
                    due_steps = (
                        cfg.train.checkpoint_every_steps > 0
                        and self.step - last_ckpt_step >= cfg.train.checkpoint_every_steps
                    )
                    due_time = (
                        cfg.train.checkpoint_every_minutes > 0
                        and time.monotonic() - t_ckpt >= 60 * cfg.train.checkpoint_every_minutes
                    )
                    stop, due_time, cancel = any_true(
                        env, watch.local_reason() is not None, due_time, watch.cancelled()
                    )
                    if stop:
                        return self._stop(watch.local_reason() or "another rank's request", cancel)
                    if due_steps or due_time:
                        self.save_checkpoint()
                        last_ckpt_step, t_ckpt = self.step, time.monotonic()
                    if self.step >= self.stop_at:
                        break
                else:
                    self.batches = None
                    if chunk >= cfg.eval.min_eval_interval:
                        final = self.iterator.chunk >= self.num_chunks or self.step >= self.stop_at
                        self._log_eval(self.evaluate(final=final))
                        if cfg.train.checkpoint_every_eval:
                            self.save_checkpoint()
                            last_ckpt_step, t_ckpt = self.step, time.monotonic()
            if self.acc_steps:
                self._log_train(time.monotonic() - t_log, bar)
            if self.last_eval_step != self.step:
                self._log_eval(self.evaluate(final=True))
            if last_ckpt_step != self.step or not ckpt.latest(self.run_dir.checkpoints, warn=False):
                self.save_checkpoint(wait=True)
            self.writer.join()
            self._write_summary("done")
            self.say(f"finished at step {self.step} in {self._elapsed():.1f} s; summary in {self.run_dir.summary_path}")
            return 0
        except guards.NonFiniteLoss as e:
            self._record_failure(e)
            if env.is_main:
                guards.print_error(e)
            return guards.EXIT_FAILED
        except BaseException as e:
            self._record_failure(e)
            unwritable = _disk_error(e)
            if unwritable is not None:
                newest = ckpt.latest(self.run_dir.checkpoints, warn=False)
                raise RunDirError(
                    f"the run directory {self.run_dir.path} can no longer be written ({unwritable}); the run stopped "
                    f"at step {self.step}. The newest complete checkpoint is {newest or 'none'}; make the folder "
                    f"writable (or free space) and start the same command again to resume (train.resume=auto)"
                ) from None
            raise
        finally:
            bar.close()
            watch.restore()
            self.logger.finish()
            self.close()

    def _record_failure(self, error: BaseException) -> None:
        """State `failed` with the reason in summary.json; an unwritable run dir leaves the heartbeat to tell."""
        if not self.env.is_main:
            return
        summary = dict(self._summary("failed"), message=f"{type(error).__name__}: {error}")
        try:
            self.run_dir.write_summary(summary)
            self.run_dir.append_log(f"failed at step {self.step}: {summary['message']}")
        except OSError as e:
            tqdm.write(f"error: cannot record the failure in {self.run_dir.path} either ({e.strerror})")

    def _stop(self, reason: str, cancel: bool) -> int:
        """Checkpoint and leave: a cancel (TERM/INT on any rank) stops, anything else asks for a requeue."""
        self.save_checkpoint(wait=True)
        self._write_summary("cancelled" if cancel else "checkpointed")
        if cancel:
            self.say(
                f"stopping at step {self.step} ({reason}): checkpoint saved, exit code {EXIT_STOPPED} (a stop: "
                "this run does not requeue itself; train.resume=auto continues it)"
            )
            return EXIT_STOPPED
        self.say(
            f"stopping at step {self.step} ({reason}): checkpoint saved, exit code {EXIT_REQUEUE} asks for a requeue"
        )
        return EXIT_REQUEUE

    def _log_train(self, seconds: float, bar: tqdm) -> None:
        num_steps = self.acc_steps
        metrics = self._reduce_train(self.acc.clone(), num_steps)
        self.acc.zero_()
        self.acc_steps = 0
        metrics["train/samples_per_s"] = num_steps * self.B / max(seconds, 1e-9)
        guards.check_finite_loss(metrics["train/loss"], self.step, self._lr)  # every rank: all stop together
        if not self.env.is_main:
            return
        record = {
            "event": "train",
            "step": self.step,
            "epoch": self.iterator.epoch(),
            "time_s": self._elapsed(),
            **metrics,
        }
        self.run_dir.append_metrics(record)
        self.logger.log(metrics, self.step)
        bar.set_postfix(
            loss=f"{metrics['train/loss']:.3f}", exact=f"{metrics['train/exact_accuracy']:.3f}", refresh=False
        )
        self.say(
            f"train step {self.step:>7}/{self.final_step} ep {self.iterator.epoch():.1f} | "
            f"loss {metrics['train/loss']:.4f} acc {metrics['train/accuracy']:.4f} "
            f"exact {metrics['train/exact_accuracy']:.4f} qacc {metrics['train/q_halt_accuracy']:.3f} "
            f"steps {metrics['train/steps']:.2f} halted/step {metrics['train/halted']:.1f} | "
            f"lr {metrics['train/lr']:.2e} | {metrics['train/samples_per_s']:.0f} samples/s"
        )
        self._write_summary("running")


def _disk_error(error: BaseException) -> str | None:
    """'Permission denied: path' when `error` (or the error behind a failed checkpoint write) is a
    filesystem refusal; None for anything else."""
    import errno

    for e in (error, error.__cause__):
        if isinstance(e, OSError) and e.errno in (
            errno.EACCES,
            errno.EPERM,
            errno.EROFS,
            errno.ENOSPC,
            errno.EDQUOT,
            errno.ENOENT,
        ):
            return f"{e.strerror}: {e.filename}" if e.filename else str(e.strerror)
    return None


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()


def load_weights(model: TRM, path: Path, use_ema: bool = True) -> None:
    """Initial weights from one of our checkpoints or from the paper's code (see trm.train.init_weights)."""
    try:
        load_initial_weights(model, path, use_ema)
    except InitError as e:
        raise ResumeError(str(e)) from None
