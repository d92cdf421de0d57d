"""Training and evaluation speed of the real trainer path, on CPU or one GPU.

    python bench/train_speed.py trm/configs/sudoku.yaml --device cuda --batch 768 --steps 30 --compile
    python bench/train_speed.py trm/configs/quickstart.yaml --device cpu --compile --compare-eager
    python bench/train_speed.py CONFIG [--dtype auto|float32|bfloat16|float16] [--cuda-graphs] [key=value ...]

What it does, in order:
1. Builds the trainer (trm.train.loop.Trainer, the code a run uses) on the config's dataset when it
   exists, else on a synthetic dataset of the same shape (vocabulary, length, puzzle ids; random
   tokens: speed does not depend on them), in a temporary run directory.
2. Correctness: one supervision step of the fast path (the asked dtype, compile) against the plain
   eager float32 model with the same weights on a fresh random batch: relative error of the logits,
   the Q-halt logits and the gradients. The reference runs in slices (--check-batch; 64 on CUDA) so
   that its float32 activations fit where the fast path's fit.
3. Training: `--warmup` steps (compilation happens there), then `--steps` steps timed without any
   sync (samples/s, tokens/s, ms per step), then `--steps` more with a sync between phases for the
   split data / forward / backward / optimizer. Peak memory. On CUDA the model FLOP utilisation:
   FLOPs counted from the architecture (trm/train/flops.py: matrix products only) over the
   datasheet peak of the GPU for the dtype (--peak-tflops to override).
4. Evaluation (EMA weights, as a run evaluates): samples/s over `--eval-batches` test batches with
   and without eval.halt_early, the exact-accuracy difference between the two, and the time the
   Sudoku-Extreme test set (422,786 puzzles) would take at that speed.
5. With --compare-eager: the same training steps of the eager path of the trainer (train.compile
   off, float32 on CPU) in the same process, interleaved with the fast path in blocks so that the
   load of a shared machine hits both alike; the last line reads `speedup vs eager: <ratio>x`.

Figures go to stdout and, with --json FILE, to a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trm import config as C  # noqa: E402
from trm.data.synthetic import write_random_dataset  # noqa: E402
from trm.model.trm import TRM  # noqa: E402
from trm.train import dist  # noqa: E402
from trm.train.flops import peak_tflops, step_flops  # noqa: E402
from trm.train.losses import act_loss  # noqa: E402
from trm.train.prefetch import Prefetcher  # noqa: E402

SUDOKU_EXTREME_TEST = 422_786  # test puzzles of sapientinc/sudoku-extreme (the reference evaluates all)

# Shapes of the paper's datasets, for a synthetic stand-in when the real one is not built here:
# (vocab_size, seq_len, num_puzzle_identifiers). ARC's real table has ~960k ids (2 GB); a step
# touches only the batch's rows, so a small table times the same.
SHAPES = {"sudoku": (11, 81, 1), "maze": (6, 900, 1), "arc": (12, 900, 4096), "sudoku-4x4": (6, 16, 1)}


def _shape_for(data_path: str) -> tuple[int, int, int]:
    name = Path(data_path).name
    for key in ("sudoku-4x4", "sudoku", "maze", "arc"):
        if key in name:
            return SHAPES[key]
    raise SystemExit(
        f"train_speed: no dataset at '{data_path}' and no known shape for it; build it first "
        f"(tools/build_data.py) or pass data_paths=[...] of a built dataset"
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------------------------


def build_trainer(cfg: C.Config, device: str) -> Any:
    from trm.train.loop import Trainer

    return Trainer(cfg, dist.init(device))


def correctness(trainer: Any, device: torch.device, slice_size: int = 0) -> dict[str, float]:
    """The fast path's supervision step vs plain eager float32 with the same weights, fresh inputs.

    slice_size: the reference runs the batch in slices of this many samples (0: all at once) and sums
    their gradients. The samples of a supervision step are independent, so this computes the same
    thing with the memory of one slice: float32 activations of a full paper batch do not fit one GPU
    (Maze at 768: ~350 GB by the count in gpu_check.sh)."""
    fast = trainer.model
    meta = trainer.train_split.meta
    B = trainer.local_B
    n = slice_size if 0 < slice_size < B else B
    ref = TRM(
        trainer.cfg.arch,
        meta.vocab_size,
        meta.seq_len,
        max(1, meta.num_puzzle_identifiers),
        n,
        torch.float32,
    ).to(device)
    ref.load_state_dict(fast.state_dict())
    g = torch.Generator().manual_seed(1234)
    batch = {
        "inputs": torch.randint(1, meta.vocab_size, (B, meta.seq_len), generator=g).to(torch.int32),
        "labels": torch.randint(1, meta.vocab_size, (B, meta.seq_len), generator=g),
        "puzzle_identifiers": torch.randint(0, max(1, meta.num_puzzle_identifiers), (B,), generator=g).to(torch.int32),
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    outs = []
    for model, size in ((fast, B), (ref, n)):
        model.train()
        model.zero_grad(set_to_none=True)
        logits, q_halt, losses = [], [], []
        for start in range(0, B, size):
            part = {k: v[start : start + size] for k, v in batch.items()}
            carry, out = model(model.initial_carry(part), part, None)
            loss, _ = act_loss(carry, out, trainer.cfg.arch.loss_type)
            (loss / B).backward()
            logits.append(out.logits.detach().float())
            q_halt.append(out.q_halt_logits.detach())
            losses.append(loss.detach())
            del carry, out, loss
        grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        outs.append((torch.cat(logits), torch.cat(q_halt), grads, sum(losses)))
        model.zero_grad(set_to_none=True)
    del ref
    if trainer.model.inner.puzzle_emb is not None:
        trainer.model.inner.puzzle_emb.local_weights.grad = None
    (lf, qf, gf, lossf), (lr_, qr, gr, lossr) = outs
    return {
        "logits": rel_err(lf, lr_),
        "q_halt_logits": rel_err(qf, qr),
        "gradients": rel_err(gf, gr),
        "loss": abs(float(lossf) - float(lossr)) / max(abs(float(lossr)), 1e-30),
    }


class TrainBench:
    """Times the trainer's own step phases on its own sampler, prefetched as fit() does."""

    def __init__(self, trainer: Any) -> None:
        self.t = trainer
        self.device = trainer.device
        self.batches = self._batches()

    def _batches(self) -> Prefetcher:
        return Prefetcher(
            self.t.iterator.chunk_batches(),
            self.device,
            self.t.iterator.state_dict,
            lookahead=self.device.type == "cuda",
        )

    def next_batch(self) -> Any:
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = self._batches()
            return next(self.batches)

    def run(self, steps: int) -> float:
        """`steps` optimizer steps as fit() runs them (metrics kept on the device); seconds."""
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self.t.acc += self.t.train_step(self.next_batch())
        sync(self.device)
        return time.perf_counter() - t0

    def phases(self, steps: int) -> dict[str, float]:
        """Mean ms per phase, with a sync after each (slower overall than run(): no overlap)."""
        total = dict.fromkeys(("data", "forward", "backward", "optimizer"), 0.0)
        for _ in range(steps):
            sync(self.device)
            t0 = time.perf_counter()
            batch = self.next_batch()
            sync(self.device)
            t1 = time.perf_counter()
            loss, metrics = self.t.forward_step(batch)
            sync(self.device)
            t2 = time.perf_counter()
            self.t.backward_step(loss)
            sync(self.device)
            t3 = time.perf_counter()
            self.t.optimizer_step()
            sync(self.device)
            t4 = time.perf_counter()
            for k, a, b in (("data", t0, t1), ("forward", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4)):
                total[k] += 1000 * (b - a) / steps
        return total


def count_syncs(bench: TrainBench, steps: int) -> int:
    """Host-device synchronisations torch reports during `steps` training steps (want: 0)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                bench.t.acc += bench.t.train_step(bench.next_batch())
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux: the process's peak RSS


def eval_bench(trainer: Any, halt_early: bool, warmup: bool) -> dict[str, float]:
    trainer.cfg.eval.halt_early = halt_early
    max_batches, steps = trainer.cfg.eval.max_batches, trainer.cfg.arch.halt_max_steps
    if warmup:  # compiles the eval graph, outside the timing
        trainer.cfg.eval.max_batches, trainer.cfg.arch.halt_max_steps = 1, 1
        try:
            trainer.evaluate()
        finally:
            trainer.cfg.eval.max_batches, trainer.cfg.arch.halt_max_steps = max_batches, steps
    sync(trainer.device)
    t0 = time.perf_counter()
    metrics = trainer.evaluate()
    sync(trainer.device)
    seconds = time.perf_counter() - t0
    n = min(trainer.test_split.num_examples, max_batches * trainer.eval_B)
    return {
        "samples_per_s": n / seconds,
        "seconds": seconds,
        "examples": n,
        "exact_accuracy": metrics.get("eval/exact_accuracy", math.nan),
        "steps": metrics.get("eval/steps"),
    }


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("config", help="a trainer config, e.g. trm/configs/sudoku.yaml")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=0, help="global batch (default: the config's)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (twice: throughput, phases)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--compile", action="store_true", help="train.compile=true")
    p.add_argument("--cuda-graphs", action="store_true", help="train.cuda_graphs=true (with --compile, CUDA)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    p.add_argument("--compare-eager", action="store_true", help="also time the eager float32 path of the trainer")
    p.add_argument("--eval-batches", type=int, default=2, help="test batches per evaluation timing (0: skip)")
    p.add_argument("--eval-batch", type=int, default=0, help="eval.global_batch_size (default: the train batch)")
    p.add_argument(
        "--check-batch",
        type=int,
        default=-1,
        help="the correctness reference runs in slices of this many samples (default: all at once on CPU, 64 on CUDA)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch (default: torch's choice). On a shared, oversubscribed CPU 1 avoids the "
        "stalls of threads waiting for each other at every op",
    )
    p.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's peak for the dtype (default: table)")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args, overrides = p.parse_known_args(argv)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        p.error(f"unknown arguments {bad} (config overrides are key=value)")
    if args.check_batch < -1:
        p.error("--check-batch must be >= 0 (0: the whole batch at once)")
    for name in ("steps", "warmup", "eval_batches", "batch", "eval_batch", "threads"):
        if getattr(args, name) < 0 or (name == "steps" and args.steps < 1):
            p.error(f"--{name.replace('_', '-')} must be >= {1 if name == 'steps' else 0}")
    return args, overrides


def make_config(
    args: argparse.Namespace, overrides: list[str], data: Path, root: Path, name: str, fast: bool
) -> C.Config:
    B = args.batch or C.load_config(args.config, overrides).train.global_batch_size
    eval_B = args.eval_batch or B
    keys = [
        f"data.data_paths=[{data}]",
        "data.data_paths_test=[]",
        f"train.global_batch_size={B}",
        f"eval.global_batch_size={eval_B}",
        f"eval.max_batches={max(1, args.eval_batches)}",
        f"run.root={root}",
        f"run.name={name}",
        "log.progress=false",
        "log.wandb=off",
        "train.resume=false",
        f"train.device={args.device}",
        "eval.evaluators=[]",
        "train.max_steps=0",
    ]
    if fast:
        keys += [
            f"train.compile={args.compile}",
            f"train.cuda_graphs={args.cuda_graphs}",
            f"arch.forward_dtype={args.dtype}",
        ]
    else:  # the eager path: no compile; float32 on CPU, the asked dtype on a GPU
        keys += [
            "train.compile=false",
            "train.cuda_graphs=false",
            f"arch.forward_dtype={'float32' if args.device == 'cpu' else args.dtype}",
        ]
    return C.load_config(args.config, [*overrides, *keys])


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train_speed: --device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    base = C.load_config(args.config, overrides)
    out: dict[str, Any] = {"config": args.config, "device": args.device, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="trm-bench-") as tmp:
        tmp_path = Path(tmp)
        data_path = Path(base.data.data_paths[0])
        B = args.batch or base.train.global_batch_size
        eval_B = args.eval_batch or B
        if (data_path / "train" / "dataset.json").is_file():
            data, synthetic = data_path, False
        else:
            vocab, seq_len, num_ids = _shape_for(str(data_path))
            data = write_random_dataset(
                tmp_path / "data",
                vocab,
                seq_len,
                num_ids,
                num_train=max(4 * B, 64),
                num_test=max(args.eval_batches, 1) * eval_B,
            )
            synthetic = True
        fast = build_trainer(make_config(args, overrides, data, tmp_path / "runs", "fast", True), args.device)
        device = fast.device
        meta = fast.train_split.meta
        dtype = str(fast.dtype).removeprefix("torch.")
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(
            f"bench {args.config} on {name} ({torch.get_num_threads()} threads)"
            if device.type == "cpu"
            else f"bench {args.config} on {name}"
        )
        print(
            f"  data: {data} ({'synthetic, same shape as the real set' if synthetic else 'real'}): vocab "
            f"{meta.vocab_size}, seq_len {meta.seq_len}, {meta.num_puzzle_identifiers} puzzle ids"
        )
        print(
            f"  model: {fast.num_params:,} parameters, {dtype}, compile={args.compile}, "
            f"cuda_graphs={args.cuda_graphs}, batch {B}, torch {torch.__version__}"
        )
        out.update(
            device_name=name,
            dtype=dtype,
            batch=B,
            params=fast.num_params,
            synthetic_data=synthetic,
            compile=args.compile,
            cuda_graphs=args.cuda_graphs,
        )

        check_batch = args.check_batch if args.check_batch >= 0 else (64 if device.type == "cuda" else 0)
        err = correctness(fast, device, check_batch)
        sliced = f", reference in slices of {check_batch}" if 0 < check_batch < fast.local_B else ""
        print(
            f"  correctness vs eager float32 (relative error{sliced}): "
            + ", ".join(f"{k} {v:.2e}" for k, v in err.items())
        )
        out["correctness_rel_err"] = err
        failed = getattr(fast.model.inner.recurse, "failed", None)  # set by trm.train.compiled's fallback
        out["compile_failed"] = failed
        if failed:
            print(f"  COMPILE FAILED, the fast path runs eagerly: {failed}")

        bench = TrainBench(fast)
        t0 = time.perf_counter()
        if args.warmup:
            bench.run(args.warmup)
        print(f"  warm-up: {args.warmup} steps in {time.perf_counter() - t0:.1f} s (includes compilation)")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            out["syncs_in_3_steps"] = count_syncs(bench, 3)
            print(
                f"  host-device syncs inside 3 training steps: {out['syncs_in_3_steps']} "
                "(torch.cuda.set_sync_debug_mode)"
            )

        eager_bench = None
        if args.compare_eager:
            eager = build_trainer(make_config(args, overrides, data, tmp_path / "runs", "eager", False), args.device)
            eager.model.load_state_dict(fast.model.state_dict())
            eager_bench = TrainBench(eager)
            if args.warmup:
                eager_bench.run(args.warmup)
        # Alternate step by step: on a shared machine both paths see the same load. The speedup is the
        # ratio of the median step times (robust to another job's burst hitting a few steps).
        fast_times: list[float] = []
        eager_times: list[float] = []
        if eager_bench is None:
            fast_times.append(bench.run(args.steps))
        else:
            for _ in range(args.steps):
                fast_times.append(bench.run(1))
                eager_times.append(eager_bench.run(1))
        fast_s, eager_s = sum(fast_times), sum(eager_times)
        seq = meta.seq_len
        sps = args.steps * B / fast_s
        train = {"samples_per_s": sps, "tokens_per_s": sps * seq, "ms_per_step": 1000 * fast_s / args.steps}
        phases = bench.phases(args.steps)
        train["phases_ms"] = phases
        train["peak_memory_gb"] = peak_memory_gb(device)
        flops = step_flops(fast.cfg.arch, meta.vocab_size, seq)
        train["model_tflop_per_step"] = flops["train_step"] * B / 1e12
        print(
            f"  train: {sps:,.1f} samples/s, {sps * seq:,.0f} tokens/s, {train['ms_per_step']:.1f} ms/step "
            f"({args.steps} steps, no sync inside)"
        )
        print("  train phases (ms/step, synced after each): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
        mem_what = "GPU max allocated" if device.type == "cuda" else "process peak RSS"
        print(f"  peak memory: {train['peak_memory_gb']:.2f} GiB ({mem_what})")
        if device.type == "cuda":
            peak = args.peak_tflops or peak_tflops(name, dtype)
            achieved = flops["train_step"] * B / (fast_s / args.steps) / 1e12
            train["achieved_tflops"] = achieved
            if peak:
                train["mfu"] = achieved / peak
                print(
                    f"  MFU: {100 * achieved / peak:.1f}% ({achieved:.1f} of {peak:.0f} TFLOP/s peak {dtype}; "
                    f"{train['model_tflop_per_step']:.2f} TFLOP/step counted from the architecture, matmuls only)"
                )
            else:
                print(
                    f"  MFU: unknown peak for '{name}' in {dtype}; {achieved:.1f} TFLOP/s achieved (pass --peak-tflops)"
                )
        out["train"] = train

        if args.eval_batches:
            ev = {}
            for halt_early in (False, True):
                warm = args.compile and not halt_early
                ev["halt_early" if halt_early else "all_steps"] = eval_bench(fast, halt_early, warm)
            a, b = ev["all_steps"], ev["halt_early"]
            ev["exact_accuracy_difference"] = b["exact_accuracy"] - a["exact_accuracy"]
            ev["sudoku_extreme_test_minutes"] = SUDOKU_EXTREME_TEST / a["samples_per_s"] / 60
            ev["sudoku_extreme_test_minutes_halt_early"] = SUDOKU_EXTREME_TEST / b["samples_per_s"] / 60
            print(
                f"  eval (batch {eval_B}, {a['examples']} examples, EMA weights): {a['samples_per_s']:,.1f} "
                f"samples/s all {fast.cfg.arch.halt_max_steps} steps; {b['samples_per_s']:,.1f} samples/s with "
                f"halt_early (mean steps {b['steps']:.2f}); exact accuracy {a['exact_accuracy']:.4f} vs "
                f"{b['exact_accuracy']:.4f} (difference {ev['exact_accuracy_difference']:+.4f})"
            )
            if "sudoku" in str(data_path) and "4x4" not in str(data_path):
                print(
                    f"  Sudoku-Extreme test set ({SUDOKU_EXTREME_TEST:,} puzzles) at this speed: "
                    f"{ev['sudoku_extreme_test_minutes']:.1f} min ({ev['sudoku_extreme_test_minutes_halt_early']:.1f}"
                    " min with halt_early)"
                )
            out["eval"] = ev

        if eager_bench is not None:
            eager_sps = args.steps * B / eager_s
            out["eager"] = {
                "samples_per_s": eager_sps,
                "ms_per_step": 1000 * eager_s / args.steps,
                "median_ms_per_step": 1000 * float(np.median(eager_times)),
            }
            out["train"]["median_ms_per_step"] = 1000 * float(np.median(fast_times))
            out["speedup_vs_eager_mean"] = sps / eager_sps
            out["speedup_vs_eager"] = float(np.median(eager_times) / np.median(fast_times))
        for trainer in (fast, *([eager_bench.t] if eager_bench else [])):
            with contextlib.suppress(Exception):
                trainer.checkpoints.writer.join()
            close = getattr(trainer, "close", None)
            if close is not None:
                close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float) + "\n")
    if eager_bench is not None:
        print(
            f"  eager path (train.compile=false, {'float32' if args.device == 'cpu' else args.dtype}): "
            f"{out['eager']['samples_per_s']:,.1f} samples/s, {out['eager']['ms_per_step']:.1f} ms/step, "
            "alternating step by step with the fast path in this process"
        )
        print(
            f"  median ms/step: fast {out['train']['median_ms_per_step']:.1f}, eager "
            f"{out['eager']['median_ms_per_step']:.1f}; ratio of the means {out['speedup_vs_eager_mean']:.2f}x"
        )
        print(f"speedup vs eager: {out['speedup_vs_eager']:.2f}x")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except torch.cuda.OutOfMemoryError as e:
        print(f"train_speed: out of GPU memory ({str(e).splitlines()[0]}); try a smaller --batch", file=sys.stderr)
        sys.exit(3)
