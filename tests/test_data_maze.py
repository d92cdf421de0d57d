"""Maze generator, shortest-path labels, dihedral augmentation and the Maze CSV reader (seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trm.data import maze
from trm.data.build import main
from trm.data.format import read_split, validate_dataset
from trm.data.grids import DIHEDRAL_INVERSE, dihedral, inverse_dihedral


def _independent_shortest(q: np.ndarray, side: int) -> int:
    """Shortest S->G moves by a plain Dijkstra-free BFS written separately from trm.data.maze."""
    g = q.reshape(side, side)
    ((sr, sc),) = np.argwhere(g == maze.START)
    frontier, seen, steps = {(sr, sc)}, {(sr, sc)}, 0
    while frontier:
        if any(g[r, c] == maze.GOAL for r, c in frontier):
            return steps
        nxt = set()
        for r, c in frontier:
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= rr < side and 0 <= cc < side and g[rr, cc] != maze.WALL and (rr, cc) not in seen:
                    seen.add((rr, cc))
                    nxt.add((rr, cc))
        frontier, steps = nxt, steps + 1
    return -1


def _assert_valid_shortest_path(q: np.ndarray, a: np.ndarray, side: int) -> None:
    g, lab = q.reshape(side, side), a.reshape(side, side)
    assert np.array_equal(lab[lab != maze.PATH], g[lab != maze.PATH])
    assert np.all(g[lab == maze.PATH] == maze.OPEN)  # path only through open cells
    cells = {tuple(x) for x in np.argwhere(lab == maze.PATH)}
    start, goal = tuple(np.argwhere(g == maze.START)[0]), tuple(np.argwhere(g == maze.GOAL)[0])
    # walk from S along path cells: every step has exactly one unvisited continuation until G
    walk, prev, cur = [start], None, start
    while cur != goal:
        steps = [(cur[0] + dr, cur[1] + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        nxt = [s for s in steps if s != prev and (s in cells or s == goal)]
        assert len(nxt) == 1, f"path branches or breaks at {cur}"
        prev, cur = cur, nxt[0]
        walk.append(cur)
    assert len(walk) - 2 == len(cells)  # every marked cell is on the walk
    assert len(walk) - 1 == _independent_shortest(q, side)  # and the walk is a shortest path


def test_generated_labels_are_shortest_paths(tmp_path: Path) -> None:
    out = tmp_path / "maze"
    assert (
        main(
            [
                "maze",
                "--generate",
                "12",
                "--num-test",
                "8",
                "--size",
                "14",
                "--min-path-len",
                "20",
                "--aug",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert validate_dataset(out) == []
    train, test = read_split(out, "train"), read_split(out, "test")
    assert train.meta.vocab_size == 6 and train.meta.seq_len == 196
    assert train.num_groups == 12 and len(train.puzzle_identifiers) == 96 and test.num_examples == 8
    for split in (train, test):
        for q, a in zip(np.asarray(split.inputs), np.asarray(split.labels)):
            _assert_valid_shortest_path(q, a, 14)
            assert maze.path_problem(q, a) is None
            assert _independent_shortest(q, 14) > 20
    test_keys = {r.tobytes() for r in np.asarray(test.inputs)}
    assert not test_keys & {r.tobytes() for r in np.asarray(train.inputs)}


def test_full_size_maze_is_hard() -> None:
    rng = np.random.default_rng(3)
    q, a = maze.make_puzzle(30, rng, 110, 0.05, unique_path=True)
    _assert_valid_shortest_path(q, a, 30)
    assert _independent_shortest(q, 30) > 110
    _, count = maze.bfs(q != maze.WALL, int(np.flatnonzero(q == maze.START)[0]))
    assert count[np.flatnonzero(q == maze.GOAL)[0]] == 1  # unique shortest path


def test_path_checker_catches_bad_labels() -> None:
    rng = np.random.default_rng(4)
    q, a = maze.make_puzzle(14, rng, 20, 0.0, unique_path=True)
    assert maze.path_problem(q, a) is None
    broken = a.copy()
    broken[np.flatnonzero(a == maze.PATH)[3]] = maze.OPEN
    assert "does not connect" in maze.path_problem(q, broken)
    detour = a.copy()
    detour[np.flatnonzero((q == maze.OPEN) & (a != maze.PATH))[0]] = maze.PATH
    assert maze.path_problem(q, detour) is not None


@pytest.mark.parametrize("tid", range(8))
def test_dihedral_inverse_round_trip(tid: int) -> None:
    g = np.arange(12).reshape(3, 4)
    assert np.array_equal(inverse_dihedral(dihedral(g, tid), tid), g)
    assert np.array_equal(dihedral(dihedral(g, tid), DIHEDRAL_INVERSE[tid]), g)


def test_dihedral_ids_match_the_reference_numbering() -> None:
    g = np.arange(6).reshape(2, 3)
    assert np.array_equal(dihedral(g, 1), np.rot90(g))
    assert np.array_equal(dihedral(g, 4), np.fliplr(g))
    assert np.array_equal(dihedral(g, 5), np.flipud(g))
    assert np.array_equal(dihedral(g, 6), g.T)
    assert np.array_equal(dihedral(g, 7), np.fliplr(np.rot90(g)))
    assert len({dihedral(np.arange(9).reshape(3, 3), t).tobytes() for t in range(8)}) == 8


def _csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    path.write_text("source,question,answer,rating\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def _rows(num: int, seed: int, side: int = 10) -> list[tuple[str, str, str, str]]:
    rng = np.random.default_rng(seed)
    chars = np.array(["?", *maze.CHARSET])
    rows = []
    for _ in range(num):
        q, a = maze.make_puzzle(side, rng, 8, 0.0, unique_path=False)
        rows.append(("gen", "".join(chars[q]), "".join(chars[a]), "0"))
    return rows


def test_maze_from_csv(tmp_path: Path) -> None:
    _csv(tmp_path / "train.csv", _rows(5, 0))
    _csv(tmp_path / "test.csv", _rows(3, 1))
    out = tmp_path / "out"
    assert main(["maze", "--input-csv", str(tmp_path), "--aug", "--out", str(out)]) == 0
    train = read_split(out, "train")
    assert train.meta.seq_len == 100 and len(train.puzzle_identifiers) == 40
    first_q = (tmp_path / "train.csv").read_text().splitlines()[1].split(",")[1]
    chars = np.array(["?", *maze.CHARSET])
    assert "".join(chars[np.asarray(train.inputs)[0]]) == first_q
    # puzzle k of a group is dihedral transform k of the original, for inputs and labels alike
    for k in range(8):
        for name in ("inputs", "labels"):
            arr = np.asarray(getattr(train, name))
            assert np.array_equal(arr[k].reshape(10, 10), dihedral(arr[0].reshape(10, 10), k))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda q, a: (q.replace("S", " "), a.replace("S", " ")), "0 'S' cells"),
        (lambda q, a: (q, a.replace("#", "o", 1)), "on a wall"),
        (lambda q, a: (q[:-1] + "x", a), "contains 'x'"),
        (lambda q, a: (q, a[:-3]), "answer has 97 characters"),
    ],
)
def test_malformed_maze_csv(tmp_path: Path, mutate, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(3, 0)
    q, a = mutate(rows[1][1], rows[1][2])
    rows[1] = ("gen", q, a, "0")
    _csv(tmp_path / "train.csv", rows)
    _csv(tmp_path / "test.csv", _rows(2, 1))
    assert main(["maze", "--input-csv", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'train.csv'}: line 3:" in err and message in err
