"""Sudoku of any box size (4x4 with box 2, 9x9 with box 3): solver, generator, validity-preserving shuffles.

Grids are int arrays of shape (n*n,), row-major, 0 = blank and 1..n the digits (no token shift here;
the builders add +1 so that 0 can be PAD).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Which cells share a row, a column or a box, precomputed once per box size."""

    box: int

    @property
    def n(self) -> int:
        return self.box * self.box

    @property
    def cells(self) -> int:
        return self.n * self.n


@cache
def _peers(box: int) -> tuple[tuple[int, ...], ...]:
    n = box * box
    out = []
    for c in range(n * n):
        r, k = divmod(c, n)
        br, bk = r - r % box, k - k % box
        same = {r * n + j for j in range(n)} | {i * n + k for i in range(n)}
        same |= {(br + i) * n + bk + j for i in range(box) for j in range(box)}
        same.discard(c)
        out.append(tuple(sorted(same)))
    return tuple(out)


@cache
def _units(box: int) -> tuple[tuple[int, ...], ...]:
    n = box * box
    rows = [tuple(r * n + j for j in range(n)) for r in range(n)]
    cols = [tuple(i * n + k for i in range(n)) for k in range(n)]
    boxes = [
        tuple((br + i) * n + bk + j for i in range(box) for j in range(box))
        for br in range(0, n, box)
        for bk in range(0, n, box)
    ]
    return tuple(rows + cols + boxes)


def box_of(num_cells: int) -> int:
    """Box size from the number of cells (16 -> 2, 81 -> 3); raises ValueError for other sizes."""
    n = round(num_cells**0.5)
    box = round(n**0.5)
    if box * box != n or n * n != num_cells:
        raise ValueError(f"{num_cells} cells is not a square Sudoku with square boxes (expected 16, 81, ...)")
    return box


def is_valid_solution(grid: np.ndarray, box: int) -> bool:
    """True when every row, column and box holds each digit 1..n exactly once."""
    n = box * box
    g = np.asarray(grid).reshape(n, n)
    want = np.arange(1, n + 1)
    boxes = g.reshape(box, box, box, box).transpose(0, 2, 1, 3).reshape(n, n)
    return all(np.array_equal(np.sort(u, axis=1), np.broadcast_to(want, (n, n))) for u in (g, g.T, boxes))


def valid_solutions(grids: np.ndarray, box: int) -> np.ndarray:
    """Vectorised is_valid_solution over rows of (N, n*n) grids, shape (N,) bool."""
    n = box * box
    g = np.asarray(grids).reshape(-1, n, n)
    boxes = g.reshape(-1, box, box, box, box).transpose(0, 1, 3, 2, 4).reshape(-1, n, n)
    want = np.arange(1, n + 1)
    return np.all([(np.sort(u, axis=2) == want).all(axis=(1, 2)) for u in (g, g.transpose(0, 2, 1), boxes)], axis=0)


class _Search:
    """Bitmask backtracking with naked/hidden singles; counts solutions up to a limit and the guesses made."""

    def __init__(self, box: int, rng: np.random.Generator | None = None) -> None:
        self.box = box
        self.n = box * box
        self.full = (1 << self.n) - 1
        self.peers = _peers(box)
        self.units = _units(box)
        self.rng = rng
        self.guesses = 0
        self.solutions: list[list[int]] = []

    def _assign(self, cand: list[int], cell: int, digit_bit: int) -> bool:
        """Place a digit and propagate singles; False on contradiction (cand is modified in place)."""
        stack = [(cell, digit_bit)]
        while stack:
            c, bit = stack.pop()
            if cand[c] == bit:
                if c in self._placed:
                    continue
            elif not cand[c] & bit:
                return False
            cand[c] = bit
            self._placed.add(c)
            for p in self.peers[c]:
                if cand[p] & bit:
                    cand[p] &= ~bit
                    if cand[p] == 0:
                        return False
                    if cand[p] & (cand[p] - 1) == 0 and p not in self._placed:
                        stack.append((p, cand[p]))
        return True

    def _hidden_singles(self, cand: list[int]) -> bool | None:
        """Apply one round of hidden singles; None on contradiction, True if anything changed."""
        changed = False
        for unit in self.units:
            for d in range(self.n):
                bit = 1 << d
                where = [c for c in unit if cand[c] & bit]
                if not where:
                    return None
                if len(where) == 1 and cand[where[0]] != bit:
                    if not self._assign(cand, where[0], bit):
                        return None
                    changed = True
        return changed

    def run(self, grid: list[int], limit: int) -> None:
        self._placed: set[int] = set()
        cand = [self.full] * (self.n * self.n)
        for c, v in enumerate(grid):
            if v and not self._assign(cand, c, 1 << (v - 1)):
                return
        self._dfs(cand, limit)

    def _dfs(self, cand: list[int], limit: int) -> None:
        while True:
            changed = self._hidden_singles(cand)
            if changed is None:
                return
            if not changed:
                break
        open_cells = [c for c in range(len(cand)) if cand[c] & (cand[c] - 1)]
        if not open_cells:
            self.solutions.append([b.bit_length() for b in cand])
            return
        cell = min(open_cells, key=lambda c: bin(cand[c]).count("1"))
        bits = [1 << d for d in range(self.n) if cand[cell] & (1 << d)]
        if self.rng is not None:
            bits = [bits[i] for i in self.rng.permutation(len(bits))]
        for i, bit in enumerate(bits):
            if i > 0:
                self.guesses += 1  # a backtrack: the earlier choice at this cell failed or found a solution
            trial = cand.copy()
            placed = set(self._placed)
            if self._assign(trial, cell, bit):
                self._dfs(trial, limit)
            self._placed = placed
            if len(self.solutions) >= limit:
                return


def solve(
    puzzle: np.ndarray, box: int, limit: int = 2, rng: np.random.Generator | None = None
) -> tuple[list[np.ndarray], int]:
    """Up to `limit` solutions of a puzzle and the number of backtracks the search needed (its rating)."""
    s = _Search(box, rng)
    s.run([int(v) for v in np.asarray(puzzle).ravel()], limit)
    return [np.array(x, dtype=np.int64) for x in s.solutions], s.guesses


def random_grid(box: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly shuffled search from the empty grid: a random complete valid grid."""
    sols, _ = solve(np.zeros(box**4, dtype=np.int64), box, limit=1, rng=rng)
    return sols[0]


def minimal_puzzle(solution: np.ndarray, box: int, rng: np.random.Generator, min_clues: int = 0) -> np.ndarray:
    """Remove clues in random order while the solution stays unique (stops at min_clues)."""
    puzzle = np.array(solution, dtype=np.int64)
    for cell in rng.permutation(puzzle.size):
        if np.count_nonzero(puzzle) <= min_clues:
            break
        keep = puzzle[cell]
        puzzle[cell] = 0
        if len(solve(puzzle, box, limit=2)[0]) != 1:
            puzzle[cell] = keep
    return puzzle


@cache
def all_grids_4x4() -> np.ndarray:
    """All 288 valid 4x4 grids, shape (288, 16), found by the solver (exhaustive search)."""
    s = _Search(2)
    s.run([0] * 16, limit=10_000)
    grids = np.array(sorted(s.solutions), dtype=np.int64)
    grids.flags.writeable = False  # cached and shared: callers must copy before editing
    return grids


def count_matching_4x4(puzzles: np.ndarray) -> np.ndarray:
    """Number of valid 4x4 grids consistent with each puzzle's givens, shape (N,); 1 means unique."""
    grids = all_grids_4x4()  # (288, 16)
    p = np.asarray(puzzles).reshape(-1, 1, 16)
    ok = (p == 0) | (p == grids[None])
    return ok.all(axis=2).sum(axis=1)


def minimal_puzzles_4x4(num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`num` minimal 4x4 puzzles (random grid, random removal order), vectorised over puzzles.

    Uniqueness is checked against all 288 grids at once, which is exact and far faster than search.
    Returns (puzzles, solutions), each (num, 16).
    """
    grids = all_grids_4x4()
    sol = grids[rng.integers(0, len(grids), size=num)]
    puz = sol.copy()
    order = np.argsort(rng.random((num, 16)), axis=1)
    rows = np.arange(num)
    for step in range(16):
        cell = order[:, step]
        trial = puz.copy()
        trial[rows, cell] = 0
        unique = count_matching_4x4(trial) == 1
        puz[unique, cell[unique]] = 0
    return puz, sol


def shuffle(grids: np.ndarray, box: int, rng: np.random.Generator) -> np.ndarray:
    """Validity-preserving shuffles of many grids at once (each row of `grids` gets its own).

    Digit permutation (0 = blank stays), transpose with probability 1/2, permutation of the bands and of the
    rows inside each band, and of the stacks and the columns inside each stack. Puzzles and their solutions
    must be shuffled with the same generator state to stay paired: use `shuffle_pairs`.
    """
    return shuffle_pairs([grids], box, rng)[0]


def _line_perm(num: int, box: int, rng: np.random.Generator) -> np.ndarray:
    bands = np.argsort(rng.random((num, box)), axis=1)  # (N, box)
    within = np.argsort(rng.random((num, box, box)), axis=2)  # (N, box, box)
    return (bands[:, :, None] * box + np.take_along_axis(within, bands[:, :, None], axis=1)).reshape(num, -1)


def shuffle_pairs(arrays: list[np.ndarray], box: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Apply the same random shuffle per row to several (N, n*n) arrays (e.g. puzzles and solutions)."""
    n = box * box
    num = arrays[0].shape[0]
    digit_map = np.zeros((num, n + 1), dtype=np.int64)
    digit_map[:, 1:] = np.argsort(rng.random((num, n)), axis=1) + 1
    transpose = rng.random(num) < 0.5
    rows = _line_perm(num, box, rng)
    cols = _line_perm(num, box, rng)
    idx = np.arange(num)[:, None, None]
    out = []
    for a in arrays:
        g = np.asarray(a, dtype=np.int64).reshape(num, n, n)
        g = np.where(transpose[:, None, None], g.transpose(0, 2, 1), g)
        g = g[idx, rows[:, :, None], cols[:, None, :]]
        out.append(np.take_along_axis(digit_map, g.reshape(num, -1), axis=1))
    return out
