"""The ARC builder's small canvas (--canvas-size) and dihedral-only augmentation (--no-colour-aug)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_data_arc import build_arc, make_kaggle
from trm.data import arc
from trm.data.build import main
from trm.data.fewshot_tasks import FewShotSpec, generate, write_kaggle
from trm.data.format import Metadata, read_split
from trm.evaluators.arc import ARCEvaluator


@pytest.fixture()
def fewshot_src(tmp_path: Path) -> Path:
    spec = FewShotSpec(seed=1, num_train=12, num_seen=4, num_heldout=4, max_size=5)
    write_kaggle(generate(spec), tmp_path / "src", spec)
    return tmp_path / "src"


def test_small_canvas_round_trips_through_the_evaluator(tmp_path: Path, fewshot_src: Path) -> None:
    out = build_arc(tmp_path, fewshot_src, "--canvas-size", "5", "--demos-in", "test", "--no-colour-aug")
    meta = Metadata.from_json(out / "test" / "dataset.json")
    assert meta.seq_len == 25
    test = read_split(out, "test")
    assert test.inputs.shape[1] == 25
    # feeding the true labels as predictions solves every evaluation task: the crop and the inverse
    # transform work on the 5x5 canvas
    ev = ARCEvaluator(out, meta)
    ids = np.repeat(test.puzzle_identifiers, np.diff(test.puzzle_indices))
    ev.update(np.asarray(test.inputs), np.asarray(test.labels), ids, np.asarray(test.labels), np.zeros(len(ids)))
    result = ev.result()
    assert result["pass@1"] == 1.0 and result["coverage"] == 1.0


def test_no_colour_aug_keeps_colours(tmp_path: Path, fewshot_src: Path) -> None:
    out = build_arc(tmp_path, fewshot_src, "--canvas-size", "5", "--no-colour-aug")
    names = json.loads((out / "identifiers.json").read_text())[1:]
    perms = [arc.parse_name(n)[2] for n in names]
    assert all(np.array_equal(p, np.arange(10)) for p in perms)
    per_task: dict[str, int] = {}
    for n in names:
        per_task[arc.parse_name(n)[0]] = per_task.get(arc.parse_name(n)[0], 0) + 1
    assert max(per_task.values()) <= 5  # --num-aug 4 in build_arc: the original + 4 dihedral variants
    with_colours = build_arc(tmp_path, fewshot_src, "--canvas-size", "5", name="coloured")
    names = json.loads((with_colours / "identifiers.json").read_text())[1:]
    assert any(not np.array_equal(arc.parse_name(n)[2], np.arange(10)) for n in names)


def test_default_canvas_is_the_papers(tmp_path: Path) -> None:
    out = build_arc(tmp_path, make_kaggle(tmp_path / "kaggle"))
    assert Metadata.from_json(out / "train" / "dataset.json").seq_len == 900


def test_canvas_too_small_or_out_of_range(tmp_path: Path, fewshot_src: Path, capsys) -> None:
    assert main(["arc", "--input", str(fewshot_src), "--canvas-size", "4", "--out", str(tmp_path / "x")]) != 0
    assert "larger than --canvas-size 4" in capsys.readouterr().err
    assert main(["arc", "--input", str(fewshot_src), "--canvas-size", "31", "--out", str(tmp_path / "y")]) != 0
    assert "--canvas-size must be in [1, 30], got 31" in capsys.readouterr().err


def test_no_translate_keeps_train_grids_at_the_origin(tmp_path: Path, fewshot_src: Path) -> None:
    corner = lambda a: np.asarray(a)[:, 0] >= arc.COLOUR_OFFSET  # noqa: E731  grid starts at the origin
    moved = read_split(build_arc(tmp_path, fewshot_src, "--canvas-size", "5", name="moved"), "train")
    assert not corner(moved.inputs).all()  # 3x3 and 4x4 grids on a 5x5 canvas get offsets by default
    still = read_split(build_arc(tmp_path, fewshot_src, "--canvas-size", "5", "--no-translate"), "train")
    assert corner(still.inputs).all()
