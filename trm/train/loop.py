"""The training loop: one optimizer step per batch, the ACT carry persisting across batches.

    trainer = Trainer(cfg, dist.init(cfg.train.device)); exit_code = trainer.fit()

Per step (the reference's train_batch): refill halted slots, one supervision step, loss / global
batch, backward (DDP sums gradients over ranks), AdamATan2 + sparse sign-SGD, EMA. Every
`eval.eval_interval` epochs: evaluation with the EMA weights. When to checkpoint and what a
checkpoint holds is trm.train.checkpoint_manager's; a stop request (signal or time limit)
checkpoints at the next step boundary and returns EXIT_REQUEUE (EXIT_STOPPED for a cancel).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from trm import config as C
from trm.data.format import DatasetError, read_split, validate_dataset
from trm.data.iterator import Batch, TrainIterator, eval_batches, valid_prefix
from trm.model.trm import TRM, Carry, count_parameters, resolve_dtype
from trm.rundir import EXIT_FAILED, EXIT_REQUEUE, EXIT_STOPPED
from trm.train import checkpoint as ckpt
from trm.train import etrm, guards, runlock
from trm.train.checkpoint_manager import CheckpointManager
from trm.train.compiled import compile_recursion
from trm.train.dist import DistEnv, any_true, broadcast_object, gather_objects
from trm.train.init_weights import load_initial_weights
from trm.train.losses import METRIC_KEYS, act_loss, halted_loss_sums
from trm.train.metrics import MetricSums, eval_means, metric_row, reduce_sums, train_means
from trm.train.optim import EMA, AdamATan2, SignSGD, lr_at
from trm.train.preempt import StopWatch
from trm.train.prefetch import Prefetcher
from trm.train.runlog import RunDir, RunDirError, make_logger

if TYPE_CHECKING:
    from trm.train.runlog import NullLogger, WandbLogger


def _sum_hook(state, bucket):  # noqa: ANN001 - DDP inspects these annotations: leave them off
    # The loss is already divided by the global batch: gradients are summed, not averaged, over ranks.
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def run_name(cfg: C.Config) -> str:
    if cfg.run.name:
        return cfg.run.name
    data = Path(cfg.data.data_paths[0]).name if cfg.data.data_paths else "run"
    return f"{data}-{C.config_hash(cfg)[:8]}"


def _batch_sizes(cfg: C.Config, world_size: int) -> tuple[int, int, int]:
    """(global train batch, this rank's share, global eval batch); both must split evenly over ranks."""
    train = cfg.train.global_batch_size
    if train % world_size:
        raise C.ConfigError(
            f"train.global_batch_size ({train}) must be divisible by the number of ranks ({world_size})"
        )
    eval_ = cfg.eval.global_batch_size or train
    if eval_ % world_size:
        raise C.ConfigError(f"eval.global_batch_size ({eval_}) must be divisible by the number of ranks ({world_size})")
    return train, train // world_size, eval_


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
    """One run: built and resumed in __init__, trained by fit(); one Trainer per run directory."""

    def __init__(self, cfg: C.Config, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.device = env.device
        tc = cfg.train
        C.check_runnable(cfg)
        self.train_split, self.test_split = _load_data(cfg)
        self.B, self.local_B, self.eval_B = _batch_sizes(cfg, env.world_size)
        self.dtype = resolve_dtype(cfg.arch.forward_dtype, self.device)
        # Encoder mode (ETRM): the few-shot view of the data; checked before anything is built.
        self.fewshot = (
            etrm.EncoderData.load(cfg, self.train_split, self.test_split) if cfg.arch.encoder_type != "none" else None
        )
        self.model = self._build_model()
        self.num_params = count_parameters(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.adam, self.sparse, self.ema, self.decoder_params = self._build_optimizers()
        self.forward_module = self._distribute()
        if tc.compile:
            compile_recursion(self.model.inner, tc.cuda_graphs, lambda line: self.say(line))
        self.iterator = self._build_iterator()
        self.num_chunks, self.total_steps, self.stop_at, self.final_step = self._schedule()
        # Exploration draws for the whole global batch, from one generator that every rank shares.
        self.explore_gen = torch.Generator(device=self.device)
        self.explore_gen.manual_seed(tc.seed + 1)
        torch.manual_seed(tc.seed + env.rank)  # whatever else draws from the global RNG: per rank, as the reference

        # Where the run stands; a checkpoint holds all of it (trm.train.checkpoint_manager).
        self.step = 0
        self.carry: Carry | None = None
        self.acc = MetricSums(self.device)  # this log interval's metric sums
        self.best: dict[str, dict[str, float]] = {}
        self.final: dict[str, float] = {}
        self.last_eval_step = -1
        self.elapsed_before = 0.0  # seconds spent by earlier attempts
        self.attempts = 1
        self.batches: Prefetcher | None = None  # the chunk's batches, when the loop is running
        self._lr = 0.0  # the step's learning rate, for the log
        self._t_start = self._t_log = time.monotonic()  # fit() starts both clocks again

        self.name = run_name(cfg)
        self.run_dir = RunDir(Path(cfg.run.root) / self.name)
        self.run_lock = runlock.acquire_run_lock(self.run_dir.path, env)  # one trainer per run directory
        try:
            self.checkpoints = CheckpointManager(tc, self.run_dir, env)
            if not self.checkpoints.resume(self):
                self._load_initial_weights()
            self.logger = self._open_logger()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Free the run directory for the next trainer (fit() does it when it returns)."""
        if getattr(self, "run_lock", None) is not None:
            self.run_lock.release()

    # ------------------------------------------------------------------------------------------
    # the loop

    def fit(self) -> int:
        """Train to the end (0) or to a stop request (EXIT_REQUEUE, EXIT_STOPPED; checkpointed first);
        a non-finite loss gives EXIT_FAILED. Every `eval.eval_interval` epochs (a chunk): evaluate."""
        watch, bar = self._begin()
        try:
            while not self._at_end():
                chunk = self.iterator.chunk
                self.batches = Prefetcher(
                    self.iterator.chunk_batches(),
                    self.device,
                    self.iterator.state_dict,
                    lookahead=self.device.type == "cuda",
                )
                for batch in self.batches:
                    self.acc += self.train_step(batch)
                    bar.update(1)
                    if self.step % self.cfg.log.log_interval == 0 or self.step >= self.stop_at:
                        self._log_train(bar)
                    # One collective per step: whether any rank must stop, or its clock says checkpoint.
                    stop, checkpoint_due, cancel = any_true(
                        self.env, watch.local_reason() is not None, self.checkpoints.time_due(), watch.cancelled()
                    )
                    if stop:
                        return self._stop(watch.local_reason() or "another rank's request", cancel)
                    self.checkpoints.maybe_save(self, checkpoint_due)
                    if self.step >= self.stop_at:
                        break
                else:  # the chunk's epochs are done: evaluate
                    self.batches = None
                    if chunk >= self.cfg.eval.min_eval_interval:
                        self._log_eval(self.evaluate(final=self._at_end()))
                        self.checkpoints.after_eval(self)
            return self._finish(bar)
        except guards.NonFiniteLoss as e:
            return self._failed(e)
        except BaseException as e:
            self._failed(e)
            raise
        finally:
            bar.close()
            watch.restore()
            self.logger.finish()
            self.close()

    def _at_end(self) -> bool:
        """The run is done: train.max_steps reached, or the last chunk's epochs."""
        return self.step >= self.stop_at or self.iterator.chunk >= self.num_chunks

    def _begin(self) -> tuple[StopWatch, tqdm]:
        """Start the clocks, the signal handlers and the progress bar; say what is about to run."""
        cfg = self.cfg
        self._t_start = time.monotonic()
        watch = StopWatch(cfg.train.signals, cfg.train.time_limit_minutes, cfg.train.time_limit_margin_minutes)
        bar = tqdm(
            total=self.final_step,
            initial=self.step,
            disable=not (cfg.log.progress and self.env.is_main),
            dynamic_ncols=True,
            unit="step",
            mininterval=1.0 if _isatty() else 60.0,
        )
        self.say(
            f"run {self.name}: {self.num_params:,} parameters, {self.env.world_size} rank(s) on {self.device.type} "
            f"({str(self.dtype).removeprefix('torch.')}), {self.final_step} steps of {self.B} "
            f"({self.total_steps} for {cfg.train.epochs} epochs), run dir {self.run_dir.path}"
        )
        if self.dtype == torch.float16:
            self.say(
                "warning: arch.forward_dtype=float16 runs without loss scaling: gradients under float16's "
                "range (6e-8) become zero. auto picks bfloat16 on GPUs that have it and float32 elsewhere"
            )
        self._write_summary("running")
        self._t_log = time.monotonic()
        self.checkpoints.start(self.step)
        return watch, bar

    def _finish(self, bar: tqdm) -> int:
        """The last interval's log line, the final evaluation and checkpoint, unless already done."""
        if self.acc.num_steps:
            self._log_train(bar)
        if self.last_eval_step != self.step:
            self._log_eval(self.evaluate(final=True))
        self.checkpoints.finish(self)
        self._write_summary("done")
        self.say(f"finished at step {self.step} in {self.elapsed():.1f} s; summary in {self.run_dir.summary_path}")
        return 0

    def _stop(self, reason: str, cancel: bool) -> int:
        """Checkpoint and leave: a cancel (TERM/INT on any rank) stops, anything else asks for a requeue."""
        self.checkpoints.save(self, wait=True)
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

    def _failed(self, error: BaseException) -> int:
        """Record the failure; a non-finite loss is EXIT_FAILED, a refused write of the run directory a
        RunDirError that says how to resume; for anything else the caller re-raises."""
        self._record_failure(error)
        if isinstance(error, guards.NonFiniteLoss):
            if self.env.is_main:
                guards.print_error(error)
            return EXIT_FAILED
        unwritable = _disk_error(error)
        if unwritable is not None:
            newest = ckpt.latest(self.run_dir.checkpoints, warn=False)
            raise RunDirError(
                f"the run directory {self.run_dir.path} can no longer be written ({unwritable}); the run stopped "
                f"at step {self.step}. The newest complete checkpoint is {newest or 'none'}; make the folder "
                f"writable (or free space) and start the same command again to resume (train.resume=auto)"
            ) from None
        return EXIT_FAILED  # the caller re-raises anything but a non-finite loss

    def save_checkpoint(self, wait: bool = False) -> None:
        self.checkpoints.save(self, wait=wait)

    # ------------------------------------------------------------------------------------------
    # one step

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step; returns the metric sums as a device tensor (no host-device sync here:
        the caller accumulates them on the device and reads them at the log interval)."""
        if self.cfg.train.act_mode == "online":
            return etrm.online_step(self, batch)
        loss, metrics = self.forward_step(batch)
        self.backward_step(loss)
        self.optimizer_step()
        return metric_row(metrics, self.device)

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

    def _before_optimizer(self) -> None:
        etrm.freeze_decoder_grads(self)

    def _set_lr(self) -> float:
        oc = self.cfg.optim
        lr = lr_at(self.step, oc.lr, oc.lr_warmup_steps, self.total_steps, oc.lr_min_ratio)
        if self.adam:
            for g in self.adam.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
        if self.sparse:
            self.sparse.lr = lr_at(self.step, oc.puzzle_emb_lr, oc.lr_warmup_steps, self.total_steps, oc.lr_min_ratio)
        return lr

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
        sums = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=self.device)
        saved: list[dict[str, np.ndarray]] = []
        try:
            batches = self._eval_batches(max_batches)
            for batch in Prefetcher(batches, self.device, lambda: None, lookahead=self.device.type == "cuda"):
                batch = valid_prefix(batch)  # the last batch's padding slots cost steps and count nothing
                preds, q_halt = self._eval_batch(batch, sums)
                if evaluators or cfg.eval.save_predictions:
                    self._collect_rows(batch, preds, q_halt, evaluators, saved)
            extra = self._encoder_metrics() if self.fewshot is not None and self.env.is_main else {}
        finally:
            if self.ema:
                self.ema.swap()
        out = eval_means(reduce_sums(self.env, sums), kl=self.fewshot is not None)
        out.update(extra)
        for e in evaluators:
            for k, x in e.result(self.run_dir.path / f"evaluator_{e.name}_step_{self.step}").items():
                out[f"eval/{e.name}/{k}"] = float(x)
        if self.env.is_main and saved:
            self._save_predictions(saved)
        return broadcast_object(self.env, out)

    def _eval_batch(self, batch: Batch, sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one test batch to its halts, adding its metric sums to `sums`; each example's prediction
        and Q-halt logit at the step it halted."""
        cfg = self.cfg
        data = batch.as_dict()
        carry = self.model.initial_carry(data)
        # The weights do not change during an evaluation: encode the batch's demos once for all steps.
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
            sums += metric_row(metrics, self.device)
            preds = torch.where(newly.view(-1, 1), out.logits.argmax(-1).to(preds.dtype), preds)
            q_halt = torch.where(newly, out.q_halt_logits, q_halt)
            done |= newly
            # Without halt_early every slot halts at the last step: no need to ask (a sync) each step.
            if cfg.eval.halt_early and bool(done.all()):
                break
        return preds, q_halt

    def _collect_rows(
        self, batch: Batch, preds: torch.Tensor, q_halt: torch.Tensor, evaluators: list[Any], saved: list[dict]
    ) -> None:
        """Every rank's valid rows to rank 0, for the evaluators and the first eval.save_predictions rows."""
        rows = {
            "inputs": batch.inputs,
            "labels": batch.labels,
            "preds": preds,
            "puzzle_identifiers": batch.puzzle_identifiers,
            "q_halt_logits": q_halt,
        }
        mine = {k: v[batch.valid].cpu().numpy() for k, v in rows.items()}
        parts = gather_objects(self.env, mine)
        if not self.env.is_main:
            return
        merged = {k: np.concatenate([p[k] for p in parts]) for k in mine}
        for e in evaluators:
            e.update(**merged)
        kept = sum(len(s["preds"]) for s in saved)
        if self.cfg.eval.save_predictions and kept < self.cfg.eval.save_predictions:
            saved.append(merged)

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

    # ------------------------------------------------------------------------------------------
    # what the run reports: train.log, metrics.jsonl, summary.json, the progress bar, wandb

    def say(self, line: str) -> None:
        if self.env.is_main:
            tqdm.write(line)
            self.run_dir.path.mkdir(parents=True, exist_ok=True)
            self.run_dir.append_log(line)

    def elapsed(self) -> float:
        """Seconds of training over all attempts."""
        return self.elapsed_before + (time.monotonic() - self._t_start)

    def _log_train(self, bar: tqdm) -> None:
        seconds = time.monotonic() - self._t_log
        sums, num_steps = self.acc.take()
        metrics = train_means(
            reduce_sums(self.env, sums),
            num_steps,
            self.B,
            no_act_continue=self.cfg.arch.no_ACT_continue,
            kl_weight=self.cfg.arch.kl_weight,
            kl=self.fewshot is not None,
        )
        metrics["train/lr"] = self._lr
        metrics["train/samples_per_s"] = num_steps * self.B / max(seconds, 1e-9)
        guards.check_finite_loss(metrics["train/loss"], self.step, self._lr)  # every rank: all stop together
        if self.env.is_main:
            self._report_train(metrics, bar)
        self._t_log = time.monotonic()

    def _report_train(self, metrics: dict[str, float], bar: tqdm) -> None:
        self._append_metrics("train", metrics)
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

    def _log_eval(self, metrics: dict[str, float]) -> None:
        self._record_eval(metrics)
        if self.env.is_main:
            self._append_metrics("eval", metrics)
            self.logger.log(metrics, self.step)
            shown = " ".join(f"{k.removeprefix('eval/')} {v:.4f}" for k, v in metrics.items())
            self.say(f"eval  step {self.step:>7} ep {self.iterator.epoch():.1f} | {shown}")
        self._write_summary("running")

    def _append_metrics(self, event: str, metrics: dict[str, float]) -> None:
        now = {"event": event, "step": self.step, "epoch": self.iterator.epoch(), "time_s": self.elapsed()}
        self.run_dir.append_metrics({**now, **metrics})

    def _record_eval(self, metrics: dict[str, float]) -> None:
        self.final = dict(metrics)
        for k, x in metrics.items():
            if k.endswith("/steps") or x is None or (isinstance(x, float) and math.isnan(x)):
                continue
            better = (lambda a, b: a < b) if "loss" in k else (lambda a, b: a > b)
            if k not in self.best or better(x, self.best[k]["value"]):
                self.best[k] = {"value": x, "step": self.step}
        self.last_eval_step = self.step

    def _summary(self, state: str) -> dict[str, Any]:
        elapsed = self.elapsed()
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

    # ------------------------------------------------------------------------------------------
    # building (called once, from __init__)

    def _build_model(self) -> TRM:
        cfg, meta = self.cfg, self.train_split.meta
        num_ids = max(1, meta.num_puzzle_identifiers)
        # Before allocating: an absurd size must not take the machine.
        guards.check_fits_memory(cfg.arch, meta.vocab_size, meta.seq_len, num_ids, self.local_B, self.device)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        model = TRM(cfg.arch, meta.vocab_size, meta.seq_len, num_ids, self.local_B, self.dtype, pad_id=meta.pad_id)
        model = model.to(self.device)
        if cfg.train.act_mode == "online":
            model.halt_max_steps = cfg.arch.num_act_steps  # evaluation runs the steps training ran
        return model

    def _build_optimizers(self) -> tuple[AdamATan2 | None, SignSGD | None, EMA | None, list[torch.nn.Parameter]]:
        """Adam (None with optim.freeze_weights), sign-SGD for the puzzle table, the EMA, and the
        decoder's parameters (train.freeze_decoder_steps drops their gradients)."""
        tc, oc = self.cfg.train, self.cfg.optim
        groups, decoder_params = etrm.encoder_param_groups(self.model, oc.encoder_lr_scale)
        adam = (
            None
            if oc.freeze_weights
            else AdamATan2(groups, lr=0.0, betas=(oc.beta1, oc.beta2), weight_decay=oc.weight_decay)
        )
        emb = self.model.inner.puzzle_emb
        sparse = SignSGD(emb, 0.0, oc.puzzle_emb_weight_decay) if emb is not None else None
        ema = EMA(self.params, tc.ema_rate) if tc.ema and not oc.freeze_weights else None
        if oc.freeze_weights:
            for p in self.params:
                p.requires_grad_(False)
        return adam, sparse, ema, decoder_params

    def _distribute(self) -> torch.nn.Module:
        """The module the step calls: DDP around the model when there are several ranks to train."""
        if not self.env.distributed or self.cfg.optim.freeze_weights:
            return self.model
        ddp_cls = torch.nn.parallel.DistributedDataParallel
        # The buffers (RoPE tables) are computed alike on every rank: no per-forward sync. torch 2.13 renamed
        # the flag (a FutureWarning for the old name); older releases know only broadcast_buffers.
        no_sync = (
            "forward_sync_buffers"
            if "forward_sync_buffers" in inspect.signature(ddp_cls).parameters
            else "broadcast_buffers"
        )
        ddp = ddp_cls(self.model, bucket_cap_mb=25, device_ids=None, **{no_sync: False})
        ddp.register_comm_hook(None, _sum_hook)
        return ddp

    def _build_iterator(self) -> TrainIterator:
        cfg, env = self.cfg, self.env
        if self.fewshot is not None:
            return self.fewshot.train_iterator(cfg, env.rank, env.world_size)
        return TrainIterator(
            self.train_split,
            self.B,
            env.rank,
            env.world_size,
            cfg.train.seed,
            cfg.eval.eval_interval,
            cfg.data.max_train_groups,
        )

    def _schedule(self) -> tuple[int, int, int, int]:
        """(chunks of eval.eval_interval epochs, the LR schedule's steps, the step max_steps stops at,
        the step the run will end at)."""
        tc = self.cfg.train
        num_chunks = tc.epochs // self.cfg.eval.eval_interval
        total_steps = int(tc.epochs * self.iterator.examples_per_epoch() / self.B)
        if total_steps < 1:
            raise C.ConfigError(
                f"train.epochs={tc.epochs} over {self.iterator.num_groups} groups gives no full batch "
                f"of {self.B}; raise train.epochs or lower train.global_batch_size"
            )
        stop_at = min(total_steps, tc.max_steps) if tc.max_steps > 0 else total_steps
        # The reference's step count includes the partial batch each chunk drops, so the chunks' own
        # batches bound the run too. This is the denominator users see.
        final_step = min(stop_at, num_chunks * self.iterator.batches_in_chunk())
        return num_chunks, total_steps, stop_at, final_step

    def _load_initial_weights(self) -> None:
        """train.init_from, for a run that does not resume: the weights of another run (or the paper's)."""
        tc = self.cfg.train
        if tc.init_from:
            load_initial_weights(self.model, Path(tc.init_from), tc.init_from_ema, self.say)
            if self.ema:
                self.ema = EMA(self.params, tc.ema_rate)

    def _open_logger(self) -> NullLogger | WandbLogger:
        """Rank 0 freezes the config in the run directory and logs (wandb if asked); the others do not."""
        cfg = self.cfg
        if not self.env.is_main:
            return make_logger("off", "", "", self.run_dir, {})
        self.run_dir.write_config(cfg, allow_change=cfg.train.resume_ignore_config_change)
        return make_logger(cfg.log.wandb, cfg.run.project, self.name, self.run_dir, C.to_dict(cfg))


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
