"""Sudoku solver, generator, shuffles and builders (tiny sizes, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trm.data import sudoku
from trm.data.build import main
from trm.data.format import read_split, validate_dataset

HARD_9X9 = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."


def _grid(text: str) -> np.ndarray:
    return np.array([0 if c == "." else int(c) for c in text])


def test_all_4x4_grids_are_the_288_valid_ones() -> None:
    grids = sudoku.all_grids_4x4()
    assert grids.shape == (288, 16)
    assert len({g.tobytes() for g in grids}) == 288
    assert all(sudoku.is_valid_solution(g, 2) for g in grids)


def test_is_valid_solution_rejects_a_broken_grid() -> None:
    g = sudoku.all_grids_4x4()[0].copy()
    g[[0, 1]] = g[[1, 0]]  # swapping two cells of a row breaks two columns
    assert not sudoku.is_valid_solution(g, 2)


def test_solver_counts_solutions_and_rates_hard_puzzles() -> None:
    sols, rating = sudoku.solve(_grid(HARD_9X9), 3)
    assert len(sols) == 1 and sudoku.is_valid_solution(sols[0], 3)
    assert rating > 10  # "Arto Inkala's" puzzle needs real search
    q = _grid(HARD_9X9)
    q[0] = 0  # dropping a clue of this minimal puzzle makes it ambiguous
    assert len(sudoku.solve(q, 3, limit=2)[0]) == 2


def test_minimal_4x4_puzzles_are_unique_and_minimal() -> None:
    rng = np.random.default_rng(1)
    puzzles, solutions = sudoku.minimal_puzzles_4x4(50, rng)
    for p, s in zip(puzzles, solutions):
        sols, _ = sudoku.solve(p, 2, limit=2)
        assert len(sols) == 1 and np.array_equal(sols[0], s)
        for cell in np.flatnonzero(p):  # minimal: removing any clue breaks uniqueness
            q = p.copy()
            q[cell] = 0
            assert len(sudoku.solve(q, 2, limit=2)[0]) == 2


def test_9x9_generator_gives_unique_puzzles() -> None:
    rng = np.random.default_rng(0)
    grid = sudoku.random_grid(3, rng)
    assert sudoku.is_valid_solution(grid, 3)
    puzzle = sudoku.minimal_puzzle(grid, 3, rng)
    sols, _ = sudoku.solve(puzzle, 3, limit=2)
    assert len(sols) == 1 and np.array_equal(sols[0], grid)


@pytest.mark.parametrize("box", [2, 3])
def test_shuffles_preserve_validity_and_pairing(box: int) -> None:
    rng = np.random.default_rng(2)
    if box == 2:
        p, s = sudoku.minimal_puzzles_4x4(20, rng)
    else:
        s = np.stack([sudoku.random_grid(3, rng) for _ in range(3)])
        p = np.where(rng.random(s.shape) < 0.5, s, 0)
    sp, ss = sudoku.shuffle_pairs([p, s], box, rng)
    assert all(sudoku.is_valid_solution(g, box) for g in ss)
    assert np.all((sp == 0) | (sp == ss))  # givens still agree with the shuffled solution
    assert np.array_equal(np.sort((sp > 0).sum(1)), np.sort((p > 0).sum(1)))  # same clue counts
    assert not np.array_equal(sp, p)


def _build(tmp: Path, *args: str) -> Path:
    out = tmp / "s4"
    assert main(["sudoku4x4", "--out", str(out), *args]) == 0
    return out


def test_sudoku4x4_build_is_valid_and_never_trains_on_a_test_puzzle(tmp_path: Path) -> None:
    out = _build(tmp_path, "--num-train", "60", "--num-test", "100", "--num-aug", "200")
    assert validate_dataset(out) == []
    train, test = read_split(out, "train"), read_split(out, "test")
    assert train.meta.vocab_size == 6 and train.meta.seq_len == 16 and train.meta.num_puzzle_identifiers == 1
    assert train.num_groups == 60 and len(train.puzzle_identifiers) == 60 * 201
    assert test.num_groups == 100 and test.num_examples == 100
    test_keys = {r.tobytes() for r in np.asarray(test.inputs)}
    assert len(test_keys) == 100
    assert not test_keys & {r.tobytes() for r in np.asarray(train.inputs)}
    for split in (train, test):
        q, a = np.asarray(split.inputs).astype(int) - 1, np.asarray(split.labels).astype(int) - 1
        assert q.min() == 0 and a.min() == 1 and a.max() == 4
        assert np.all((q == 0) | (q == a))
        assert np.all(sudoku.count_matching_4x4(q) == 1)
        assert sudoku.valid_solutions(a, 2).all()
    # each group starts with its original, followed by variants of it (same clue count)
    clues = (np.asarray(train.inputs) > 1).sum(1).reshape(60, 201)
    assert np.all(clues == clues[:, :1])


def test_sudoku4x4_is_reproducible_and_seed_dependent(tmp_path: Path) -> None:
    a = _build(tmp_path / "a", "--num-train", "20", "--num-test", "10", "--num-aug", "2")
    b = _build(tmp_path / "b", "--num-train", "20", "--num-test", "10", "--num-aug", "2")
    c = _build(tmp_path / "c", "--num-train", "20", "--num-test", "10", "--num-aug", "2", "--seed", "1")
    for f in ("train/all__inputs.npy", "test/all__labels.npy"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "train/all__inputs.npy").read_bytes() != (c / "train/all__inputs.npy").read_bytes()


def test_seeds_small_recipe(tmp_path: Path) -> None:
    out = _build(tmp_path, "--subsample-size", "100", "--num-aug", "1")
    train = read_split(out, "train")
    assert train.num_groups == 100 and len(train.puzzle_identifiers) == 200


def test_existing_folder_is_kept_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _build(tmp_path, "--num-train", "10", "--num-test", "5", "--num-aug", "1")
    before = (out / "train/all__inputs.npy").read_bytes()
    small = ["--num-test", "5", "--num-aug", "1"]
    assert main(["sudoku4x4", "--out", str(out), "--num-train", "10", *small]) == 0
    assert "already holds this build" in capsys.readouterr().out
    assert main(["sudoku4x4", "--out", str(out), "--num-train", "12", *small]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "different dataset" in err and "--force" in err
    assert (out / "train/all__inputs.npy").read_bytes() == before
    assert main(["sudoku4x4", "--out", str(out), "--num-train", "12", *small, "--force"]) == 0
    assert json.loads((out / "build_info.json").read_text())["args"]["num_train"] == 12
    assert read_split(out, "train").num_groups == 12
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_foreign_folder_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["sudoku4x4", "--out", str(out), "--num-train", "5", "--num-test", "5"]) == 2
    assert "did not build" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


# ---------------------------------------------------------------------------------------------- 9x9


def _write_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path.write_text("source,question,answer,rating\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def _csv_rows(num: int, seed: int) -> list[tuple[str, str, str, str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(num):
        grid = sudoku.random_grid(3, rng)
        puzzle = sudoku.minimal_puzzle(grid, 3, rng)
        rating = sudoku.solve(puzzle, 3)[1]
        rows.append(("gen", "".join("." if v == 0 else str(v) for v in puzzle), "".join(map(str, grid)), str(rating)))
    return rows


@pytest.fixture(scope="module")
def extreme_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("extreme")
    _write_csv(d / "train.csv", _csv_rows(12, 0))
    _write_csv(d / "test.csv", _csv_rows(6, 1))
    return d


def test_sudoku_from_csv_folder(extreme_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "s9"
    assert (
        main(["sudoku", "--input-csv", str(extreme_like), "--subsample-size", "8", "--num-aug", "3", "--out", str(out)])
        == 0
    )
    assert validate_dataset(out) == []
    train, test = read_split(out, "train"), read_split(out, "test")
    assert train.meta.vocab_size == 11 and train.meta.seq_len == 81
    assert train.num_groups == 8 and len(train.puzzle_identifiers) == 32 and test.num_examples == 6
    a = np.asarray(train.labels).astype(int) - 1
    q = np.asarray(train.inputs).astype(int) - 1
    assert sudoku.valid_solutions(a, 3).all() and np.all((q == 0) | (q == a))
    # the test split is the CSV's test file, unshuffled, in file order
    first = (extreme_like / "test.csv").read_text().splitlines()[1].split(",")[1]
    assert "".join("." if v == 1 else str(v - 1) for v in np.asarray(test.inputs)[0]) == first


def test_sudoku_min_difficulty_filters_on_rating(extreme_like: Path, tmp_path: Path) -> None:
    ratings = [float(r.split(",")[3]) for r in (extreme_like / "train.csv").read_text().splitlines()[1:]]
    cut = sorted(ratings)[len(ratings) // 2]
    keep = sum(r >= cut for r in ratings)
    out = tmp_path / "hard"
    assert (
        main(
            [
                "sudoku",
                "--input-csv",
                str(extreme_like),
                "--subsample-size",
                "0",
                "--num-aug",
                "0",
                "--min-difficulty",
                str(cut),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert read_split(out, "train").num_groups == keep


def test_sudoku_generate_offline(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    assert main(["sudoku", "--generate", "4", "--num-test", "3", "--num-aug", "2", "--out", str(out)]) == 0
    train, test = read_split(out, "train"), read_split(out, "test")
    assert train.num_groups == 4 and test.num_examples == 3
    for split in (train, test):
        for q, a in zip(np.asarray(split.inputs).astype(int) - 1, np.asarray(split.labels).astype(int) - 1):
            sols, _ = sudoku.solve(q, 3, limit=2)
            assert len(sols) == 1 and np.array_equal(sols[0], a)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: (r[0], r[1][:80], r[2], r[3]), "question has 80 characters, expected 81"),
        (lambda r: (r[0], "x" + r[1][1:], r[2], r[3]), "question contains 'x'"),
        (lambda r: (r[0], r[1], r[2], "hard"), "rating 'hard' is not a number"),
        (lambda r: (r[0], r[1], r[2][1:] + r[2][0], r[3]), "not a valid 9x9 Sudoku solution"),
        (lambda r: (r[0], r[1]), "2 columns, expected 4"),
    ],
)
def test_malformed_csv_row_names_file_and_line(
    extreme_like: Path, tmp_path: Path, mutate, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [tuple(line.split(",")) for line in (extreme_like / "train.csv").read_text().splitlines()[1:]]
    rows[2] = mutate(rows[2])
    bad = _write_csv(tmp_path / "bad.csv", rows)
    out = tmp_path / "out"
    assert (
        main(["sudoku", "--input-csv", str(bad), "--test-csv", str(extreme_like / "test.csv"), "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert f"{bad}: line 4:" in err and message in err
    assert not out.exists()


def test_csv_with_wrong_header_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "train.csv"
    bad.write_text("id,puzzle,solution\n")
    (tmp_path / "test.csv").write_text(bad.read_text())
    assert main(["sudoku", "--input-csv", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "line 1: header" in capsys.readouterr().err
