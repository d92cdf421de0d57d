"""Show examples of a dataset, or a model's predictions beside the labels, in the terminal and as a PNG.

    python tools/show.py data/sudoku-4x4                          # first 3 test examples, text + PNG
    python tools/show.py data/maze-30x30-hard-1k --split train --index 0 8 16 --png maze.png
    python tools/show.py data/arc1concept-aug-1000 --random 4 --seed 1
    python tools/show.py runs/x/preds.npz --data data/sudoku-4x4   # predictions (inputs, labels, preds)
    python tools/show.py runs/x/preds.npz --kind hanoi --wrong     # only the examples the model got wrong

A predictions file is an .npz with arrays `inputs`, `labels` (-100 = ignored), `preds`, all (N, seq_len),
and optionally `puzzle_identifiers` (N,).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from trm.data import render
from trm.data.format import IGNORE_LABEL, DatasetError, Metadata, read_split


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/show.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("path", type=Path, help="a dataset folder or a predictions .npz")
    p.add_argument("--data", type=Path, default=None, help="the dataset a predictions file belongs to")
    p.add_argument("--kind", choices=render.KINDS, default=None, help="puzzle kind (default: detected)")
    p.add_argument("--split", choices=("train", "test"), default="test")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--index", type=int, nargs="+", default=None, help="example rows to show")
    pick.add_argument("--random", type=int, default=None, metavar="N", help="show N random examples")
    p.add_argument("--num", type=int, default=3, help="how many examples from the start (default 3)")
    p.add_argument("--wrong", action="store_true", help="predictions: show only examples with an error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", type=Path, default=None, help="PNG path (default: show-<name>-<split>.png here)")
    p.add_argument("--no-png", action="store_true", help="text only")
    p.add_argument("--no-text", action="store_true", help="PNG only")
    return p


def _load(
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, Metadata | None, Path | None]:
    if args.path.suffix == ".npz":
        if not args.path.is_file():
            raise DatasetError(f"{args.path}: predictions file not found")
        if not zipfile.is_zipfile(args.path):
            raise DatasetError(
                f"{args.path}: not an .npz file (an .npz is a zip archive of .npy arrays); expected "
                f"the file a run writes to predictions/step-N.npz"
            )
        try:
            with np.load(args.path, allow_pickle=False) as z:
                missing = [k for k in ("inputs", "labels", "preds") if k not in z.files]
                if missing:
                    raise DatasetError(f"{args.path}: missing arrays {missing} (expected inputs, labels, preds)")
                arrays = {k: np.asarray(z[k]).astype(np.int64) for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as e:
            raise DatasetError(
                f"{args.path}: not a readable predictions .npz ({type(e).__name__}: {e}); expected "
                f"the file a run writes to predictions/step-N.npz"
            ) from None
        if not arrays["inputs"].shape == arrays["labels"].shape == arrays["preds"].shape:
            shapes = {k: arrays[k].shape for k in ("inputs", "labels", "preds")}
            raise DatasetError(f"{args.path}: arrays must share one shape (N, seq_len), got {shapes}")
        meta = read_split(args.data, args.split).meta if args.data is not None else None
        return (arrays["inputs"], arrays["labels"], arrays["preds"], arrays.get("puzzle_identifiers"), meta, args.data)
    split = read_split(args.path, args.split)
    ids = np.repeat(split.puzzle_identifiers, np.diff(split.puzzle_indices))
    return split.inputs, split.labels, None, ids, split.meta, args.path


def _names(data: Path | None) -> list[str] | None:
    if data is None or not (data / "identifiers.json").is_file():
        return None
    return json.loads((data / "identifiers.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.random is not None and args.random < 1:
        parser.error(f"--random N: N must be at least 1, got {args.random}")
    if args.num < 1:
        parser.error(f"--num must be at least 1, got {args.num}")
    try:
        inputs, labels, preds, ids, meta, data = _load(args)
    except DatasetError as e:
        print(f"show: error: {e}", file=sys.stderr)
        return 2
    try:
        kind = args.kind or (
            render.detect_kind(data, meta)
            if meta is not None
            else render.guess_kind(np.asarray(inputs[: min(len(inputs), 64)]))
        )
    except ValueError as e:
        print(f"show: error: {e}", file=sys.stderr)
        return 2
    num = len(inputs)
    if args.index is not None:
        bad = [i for i in args.index if not 0 <= i < num]
        if bad:
            print(f"show: error: --index {bad} outside [0, {num}) of {args.path}", file=sys.stderr)
            return 2
        rows = args.index
    else:
        candidates = np.arange(num)
        if args.wrong and preds is not None:
            lab = np.asarray(labels).astype(np.int64)
            candidates = np.flatnonzero(np.any((lab != IGNORE_LABEL) & (preds != lab), axis=1))
        if args.random is not None:
            rng = np.random.default_rng(args.seed)
            picked = rng.choice(candidates, size=min(args.random, len(candidates)), replace=False)
            rows = sorted(picked.tolist())
        else:
            rows = candidates[: args.num].tolist()
    if not rows:
        print("show: nothing to show (no example matches)")
        return 0
    names = _names(data)
    encoding = render.hanoi_encoding(data, np.asarray(labels[: min(num, 256)])) if kind == "hanoi" else ""
    examples = []
    for r in rows:
        ident = "" if ids is None else f", puzzle {int(ids[r])}"
        if names is not None and len(names) > 1 and ids is not None and 0 <= int(ids[r]) < len(names):
            ident += f" '{names[int(ids[r])]}'"
        examples.append(
            render.Example(
                np.asarray(inputs[r]).astype(np.int64),
                np.asarray(labels[r]).astype(np.int64),
                None if preds is None else preds[r],
                f"{args.split} row {r}{ident}",
            )
        )
    if not args.no_text:
        for ex in examples:
            print(render.example_text(kind, ex, encoding or "action"))
            print()
    if not args.no_png:
        stem = args.path.stem if args.path.suffix else args.path.name
        png = args.png or Path(f"show-{stem}-{args.split}.png")
        print(f"wrote {render.save_png(kind, examples, png, encoding or 'action')}")
    return 0
