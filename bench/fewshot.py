#!/usr/bin/env python
"""Few-shot generalisation on a laptop: can a demo encoder solve ARC-like tasks whose rule it never saw?

    python bench/fewshot.py [--minutes 30] [--baseline-minutes 5] [--curriculum-minutes 0] [--seed 0]
                            [--num-train 2000] [--rules RULE ...] [--curriculum-rules RULE ...] [key=value ...]

1. Generates small ARC-like tasks (trm.data.fewshot_tasks: colour maps, dihedral transforms, cyclic shifts,
   dihedral + colour map; grids --min-size..--max-size) in ARC's on-disk format under --work, and builds
   them with `tools/build_data.py arc --demos-in test --canvas-size S --no-colour-aug --no-translate`
   (translation only with --translate: the test split is never translated). Colour-permutation
   augmentation is off on purpose: it would conjugate a training colour map into one that uses the held-out
   colour pairs, so held-out tasks would no longer be unseen. Dihedral variants (--num-aug, at most 7) keep
   every rule's type and colour pairs, and give the evaluator's votes for pass@2.
2. Trains the encoder model of trm/configs/fewshot.yaml (extra key=value overrides apply to it) for
   --minutes (wall time, or CPU time with --clock cpu), evaluating about every --eval-minutes (the trainer
   runs in segments of train.max_steps, resumed from its checkpoint), and prints per evaluation: seen
   rules on new grids and held-out rules (exact, per-cell, pass@2; per rule type at the end), the training exact
   accuracy, and the encoder-collapse ratio (context variance across tasks / across the demos of a task).
   With --curriculum-minutes M the first M of those minutes train on an easier set (the same rules, but two
   shifts and two dihedral transforms, and no dihedral variants, which would make more of them), in a run
   of their own; the full set's run then starts from its newest checkpoint (train.init_from: every weight,
   the encoder's included). --curriculum-rules gives that first stage rule types of its own; --rules
   narrows the rule types.
3. The same for the puzzle-embedding TRM (arch.encoder_type=none) for --baseline-minutes: its held-out
   tasks' embeddings are never trained (their demos are in the test split), so it shows the floor.

The last line reads `held-out exact accuracy <encoder> (baseline <baseline>) in <seconds> s`: the held-out
share of query rows whose grid is fully right (every dihedral variant counted), and the encoder's seconds
on --clock (its training and evaluations; not the data build, not the baseline).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trm import config as C  # noqa: E402
from trm.data.build import main as build_main  # noqa: E402
from trm.data.fewshot_tasks import HELD_OUT_RULES, RULES, FewShotSpec, generate, write_kaggle  # noqa: E402
from trm.train import checkpoint as ckpt  # noqa: E402
from trm.train import dist  # noqa: E402
from trm.train.loop import Trainer  # noqa: E402

CONFIG = ROOT / "trm" / "configs" / "fewshot.yaml"


# The curriculum's first stage: two of the eight shifts and two of the seven dihedral transforms (a quarter
# turn and the left-right flip); colour maps as in the full set. With all transforms from the start, 5.5
# CPU-minutes on shifts alone stayed at 0% seen exact; with two shifts they reached 93% (README).
EASY_SHIFTS = ((0, 1), (1, 0))
EASY_DIHEDRALS = (1, 4)


def build_dataset(args: argparse.Namespace, easy: bool = False) -> Path:
    """The tasks in ARC's on-disk format, built by the ARC builder; `easy`: the curriculum's first stage
    (on --curriculum-rules when given)."""
    subset = {"shifts": EASY_SHIFTS, "dihedrals": EASY_DIHEDRALS} if easy else {}
    rules = tuple(args.curriculum_rules or args.rules) if easy else tuple(args.rules)
    # no dihedral variants in the easy stage: they would turn its two shifts and two transforms into more
    num_aug = 0 if easy else args.num_aug
    spec = FewShotSpec(
        seed=args.seed,
        num_train=args.num_train,
        num_seen=args.num_eval,
        num_heldout=args.num_eval if set(rules) & set(HELD_OUT_RULES) else 0,
        min_size=args.min_size,
        max_size=args.max_size,
        rules=rules,
        **subset,
    )
    translate = "" if args.translate else "-notr"
    name = f"fewshot-s{args.seed}-n{args.num_train}-e{args.num_eval}-g{args.min_size}to{args.max_size}"
    name += f"-aug{num_aug}{translate}"
    if rules != RULES:
        name += "-" + "+".join(rules)
    if easy:
        name += "-easy"
    out = args.work / "data" / name
    if (out / "identifiers.json").is_file():
        return out
    src = args.work / "data" / f"{name}-src"
    write_kaggle(generate(spec), src, spec)
    code = build_main(
        [
            "arc",
            "--input",
            str(src),
            "--subsets",
            "training",
            "evaluation",
            "--test-set-name",
            "evaluation",
            "--demos-in",
            "test",
            "--canvas-size",
            str(args.max_size),
            "--num-aug",
            str(num_aug),
            "--no-colour-aug",
            "--translate" if args.translate else "--no-translate",
            "--seed",
            str(args.seed),
            "--out",
            str(out),
        ]
    )
    if code != 0:
        raise SystemExit(f"building {out} failed (exit {code})")
    return out


def make_config(args: argparse.Namespace, data: Path, name: str, extra: list[str]) -> C.Config:
    overrides = [
        f"data.data_paths=[{data}]",
        f"run.root={args.work / 'runs'}",
        f"run.name={name}",
        f"train.seed={args.seed}",
        "train.resume=auto",
        *args.overrides,
        *extra,
    ]
    return C.load_config(CONFIG, overrides)


def _fmt(x: Any) -> str:
    return "  -  " if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def train_for(
    cfg: C.Config, minutes: float, eval_minutes: float, label: str, clock: str
) -> tuple[dict[str, float], int, float]:
    """Train in segments of about `eval_minutes`, each ending in an evaluation, until `minutes` on `clock`
    (data loading and evaluations included) are spent. Returns the last eval, the steps and the seconds.

    clock=cpu counts this process's CPU time: what the wall time would be on an idle machine with one
    thread, when the machine is shared and a wall-clock budget would buy a fraction of the work."""
    env = dist.init("cpu")
    now = time.process_time if clock == "cpu" else time.monotonic
    t0, w0 = now(), time.monotonic()
    step, target, metrics = 0, 20, {}
    print(
        f"{label}: {'wall':>6} {'cpu':>6} {'step':>6} | {'train':>5} | {'seen exact cell pass@2':>22} | "
        f"{'held-out exact cell pass@2':>26} | collapse",
        flush=True,
    )
    while True:
        seg_start, seg_step = now(), step
        tr = Trainer(replace(cfg, train=replace(cfg.train, max_steps=target)), env)
        code = tr.fit()
        if code != 0:  # a stop request (SIGTERM, SIGUSR2): the trainer checkpointed; the same command resumes
            print(f"{label}: stopped at step {tr.step} (exit {code}); run the same command to resume", flush=True)
            raise SystemExit(code)
        step, metrics = tr.step, tr.final
        m = {k.removeprefix("eval/fewshot/"): v for k, v in metrics.items()}.get
        elapsed = now() - t0
        train_exact = _train_exact(tr)
        print(
            f"{label}: {time.monotonic() - w0:6.0f} {time.process_time():6.0f} {step:6d} | {_fmt(train_exact)} | "
            f"{_fmt(m('seen/exact'))} {_fmt(m('seen/cell'))} {_fmt(m('seen/pass@2'))}       | "
            f"{_fmt(m('heldout/exact'))} {_fmt(m('heldout/cell'))} {_fmt(m('heldout/pass@2'))}           | "
            f"{_fmt(metrics.get('eval/collapse_ratio'))}",
            flush=True,
        )
        left = minutes * 60 - elapsed
        rate = (step - seg_step) / max(now() - seg_start, 1e-9)
        if left <= 0 or step == seg_step:
            return metrics, step, elapsed
        target = step + max(1, int(rate * min(eval_minutes * 60, left)))


def _train_exact(tr: Trainer) -> float | None:
    """Training exact accuracy of the segment's last log interval, read back from metrics.jsonl."""
    last = None
    with open(tr.run_dir.path / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("event") == "train":
                last = rec.get("train/exact_accuracy")
    return last


def per_rule(metrics: dict[str, float], label: str) -> None:
    for split in ("seen", "heldout"):
        parts = []
        for rule in RULES:
            k = f"eval/fewshot/{split}/{rule}"
            if f"{k}/exact" in metrics:
                parts.append(
                    f"{rule} {metrics[k + '/exact']:.3f}/{metrics[k + '/cell']:.3f}/{metrics[k + '/pass@2']:.3f}"
                )
        print(f"{label} {split:>7} per rule (exact/cell/pass@2): " + "; ".join(parts), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="wall time for the encoder model (default 30)")
    ap.add_argument(
        "--baseline-minutes",
        type=float,
        default=5.0,
        help="wall time for the puzzle-embedding baseline (default 5; 0 skips it)",
    )
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what --minutes counts: wall time (default), or this process's CPU time (the idle-machine "
        "equivalent with --threads 1, for a shared machine)",
    )
    ap.add_argument("--eval-minutes", type=float, default=3.0, help="wall time between evaluations (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-train", type=int, default=2000, help="training tasks (default 2000)")
    ap.add_argument("--num-eval", type=int, default=100, help="seen-rule and held-out tasks, each (default 100)")
    ap.add_argument("--min-size", type=int, default=3, help="smallest grid side (default 3)")
    ap.add_argument("--max-size", type=int, default=5, help="largest grid side = canvas side (default 5)")
    ap.add_argument(
        "--rules",
        nargs="+",
        choices=RULES,
        default=list(RULES),
        help="rule types to draw tasks from (default: all four; without a colour map there are no held-out tasks)",
    )
    ap.add_argument(
        "--curriculum-minutes",
        type=float,
        default=0.0,
        help="train this many of --minutes on an easier set first (two shifts, two dihedral transforms), "
        "then the rest on the full set from those weights (default 0: no curriculum)",
    )
    ap.add_argument(
        "--curriculum-rules",
        nargs="+",
        choices=RULES,
        default=None,
        help="rule types of the curriculum's first stage (default: --rules)",
    )
    ap.add_argument("--num-aug", type=int, default=3, help="dihedral variants per task, 0..7 (default 3)")
    ap.add_argument(
        "--work",
        type=Path,
        default=ROOT / "runs" / "fewshot-bench",
        help="folder for the data and the runs (default runs/fewshot-bench)",
    )
    ap.add_argument(
        "--translate",
        action="store_true",
        help="translate training grids on the canvas as the ARC builder does by default (off: the test split "
        "is never translated, and the generator already varies the grids)",
    )
    ap.add_argument("--fresh", action="store_true", help="delete earlier runs of this bench in --work first")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: these matrices are too small to gain from more, and on a "
        "shared machine extra threads spin against other processes)",
    )
    ap.add_argument("overrides", nargs="*", help="config overrides for the encoder run (key=value)")
    args = ap.parse_args()
    if not 0 <= args.num_aug <= 7:
        ap.error(f"--num-aug must be in [0, 7] (dihedral variants only), got {args.num_aug}")
    if args.minutes <= 0 or args.baseline_minutes < 0 or args.eval_minutes <= 0:
        ap.error("--minutes and --eval-minutes must be > 0, --baseline-minutes >= 0")
    if not 0 <= args.curriculum_minutes < args.minutes:
        ap.error(f"--curriculum-minutes must be in [0, --minutes={args.minutes:g}), got {args.curriculum_minutes:g}")
    if args.curriculum_rules and args.curriculum_minutes == 0:
        ap.error(
            "--curriculum-rules picks the rule types of the curriculum's first stage; give --curriculum-minutes > 0"
        )
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    data = build_dataset(args)
    tag = C.config_hash(make_config(args, data, "x", []))[:8]
    enc_name, base_name = f"encoder-{tag}", f"baseline-{tag}"
    if args.curriculum_minutes > 0:
        enc_name += f"-c{args.curriculum_minutes:g}"
        if args.curriculum_rules:
            enc_name += "-" + "+".join(args.curriculum_rules)
    stage1_name = f"{enc_name}-stage1"
    if args.fresh:
        import shutil

        for n in (enc_name, stage1_name, base_name):
            shutil.rmtree(args.work / "runs" / n, ignore_errors=True)
    print(f"data {data} ({time.monotonic() - t0:.0f} s); runs under {args.work / 'runs'}", flush=True)

    stage1_s, init = 0.0, []
    if args.curriculum_minutes > 0:
        easy = build_dataset(args, easy=True)
        print(f"curriculum: {args.curriculum_minutes:g} min on {easy.name}, then the full set", flush=True)
        first = make_config(args, easy, stage1_name, [])
        _, _, stage1_s = train_for(first, args.curriculum_minutes, args.eval_minutes, "stage 1 ", args.clock)
        newest = ckpt.latest(Path(first.run.root) / first.run.name / "checkpoints", warn=False)
        init = [f"train.init_from={newest}"]  # every tensor, the encoder's too (trm/train/init_weights.py)
    enc_cfg = make_config(args, data, enc_name, init)
    enc, enc_steps, enc_s = train_for(enc_cfg, args.minutes - stage1_s / 60, args.eval_minutes, "encoder ", args.clock)
    enc_s += stage1_s
    per_rule(enc, "encoder ")
    base_exact = float("nan")
    if args.baseline_minutes > 0:
        # the baseline: TRM's per-puzzle embedding, original ACT mode, same sizes otherwise
        base_cfg = make_config(args, data, base_name, ["arch.encoder_type=none", "train.act_mode=original"])
        base, _, _ = train_for(base_cfg, args.baseline_minutes, args.eval_minutes, "baseline", args.clock)
        per_rule(base, "baseline")
        base_exact = base.get("eval/fewshot/heldout/exact", float("nan"))
    held = enc.get("eval/fewshot/heldout/exact", float("nan"))
    print(
        f"encoder: {enc_steps} steps of {enc_cfg.train.global_batch_size} in {enc_s:.0f} s ({args.clock}); "
        f"collapse ratio {_fmt(enc.get('eval/collapse_ratio'))}",
        flush=True,
    )
    print(f"held-out exact accuracy {held:.4f} (baseline {base_exact:.4f}) in {enc_s:.0f} s", flush=True)


if __name__ == "__main__":
    main()
