"""Mazes in the Maze-Hard vocabulary: generator, BFS shortest paths, and a checker for labelled paths.

Cells use the reference's charset "# SGo" mapped to tokens 1..5 (0 = PAD): wall, open, start, goal, path.
A label is the question with the cells of one shortest S->G path (S and G excluded) marked `o`.
"""

from __future__ import annotations

from collections import deque

import numpy as np

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
TOKEN_CHARS = {ch: i + 1 for i, ch in enumerate(CHARSET)}


def _neighbours(cell: int, size: int) -> list[int]:
    r, c = divmod(cell, size)
    out = []
    if r > 0:
        out.append(cell - size)
    if r < size - 1:
        out.append(cell + size)
    if c > 0:
        out.append(cell - 1)
    if c < size - 1:
        out.append(cell + 1)
    return out


def bfs(passable: np.ndarray, source: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances (-1 where unreachable) and shortest-path counts from `source` over a flat square grid."""
    size = round(len(passable) ** 0.5)
    dist = np.full(len(passable), -1, dtype=np.int64)
    count = np.zeros(len(passable), dtype=np.int64)
    dist[source], count[source] = 0, 1
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for v in _neighbours(u, size):
            if not passable[v]:
                continue
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                queue.append(v)
            if dist[v] == dist[u] + 1:
                count[v] = min(count[v] + count[u], 2)  # only "one or more than one" matters
    return dist, count


def shortest_path(passable: np.ndarray, start: int, goal: int) -> list[int]:
    """One shortest path start..goal (inclusive), chosen deterministically; [] if unreachable."""
    size = round(len(passable) ** 0.5)
    dist, _ = bfs(passable, goal)
    if dist[start] < 0:
        return []
    path = [start]
    while path[-1] != goal:
        path.append(next(v for v in _neighbours(path[-1], size) if dist[v] == dist[path[-1]] - 1))
    return path


def random_maze(size: int, rng: np.random.Generator, loop_prob: float) -> np.ndarray:
    """A recursive-backtracker maze on a lattice of rooms two cells apart, with extra walls knocked out
    (probability `loop_prob` each) so that there are loops and several routes. Flat (size*size,) tokens."""
    grid = np.full((size, size), WALL, dtype=np.uint8)
    off = rng.integers(0, 2, size=2) if size % 2 == 0 else np.zeros(2, dtype=np.int64)
    rows = np.arange(off[0], size, 2)
    cols = np.arange(off[1], size, 2)
    nr, nc = len(rows), len(cols)
    visited = np.zeros((nr, nc), dtype=bool)
    stack = [(int(rng.integers(nr)), int(rng.integers(nc)))]
    visited[stack[0]] = True
    grid[rows[stack[0][0]], cols[stack[0][1]]] = OPEN
    while stack:
        i, j = stack[-1]
        nxt = [
            (i + di, j + dj)
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))
            if 0 <= i + di < nr and 0 <= j + dj < nc and not visited[i + di, j + dj]
        ]
        if not nxt:
            stack.pop()
            continue
        a, b = nxt[int(rng.integers(len(nxt)))]
        visited[a, b] = True
        grid[rows[a], cols[b]] = OPEN
        grid[(rows[i] + rows[a]) // 2, (cols[j] + cols[b]) // 2] = OPEN
        stack.append((a, b))
    if loop_prob > 0:
        # walls strictly between two rooms (horizontally or vertically) are the knockable ones
        knock = np.zeros_like(grid, dtype=bool)
        knock[np.ix_(rows, cols[:-1] + 1)] = True
        knock[np.ix_(rows[:-1] + 1, cols)] = True
        knock &= (grid == WALL) & (rng.random(grid.shape) < loop_prob)
        grid[knock] = OPEN
    return grid.ravel()


def make_puzzle(
    size: int, rng: np.random.Generator, min_path_len: int, loop_prob: float, unique_path: bool, max_tries: int = 200
) -> tuple[np.ndarray, np.ndarray] | None:
    """A (question, answer) pair whose shortest path is longer than `min_path_len` moves, or None."""
    for _ in range(max_tries):
        grid = random_maze(size, rng, loop_prob)
        open_cells = np.flatnonzero(grid == OPEN)
        start = int(rng.choice(open_cells))
        dist, count = bfs(grid != WALL, start)
        far = (dist > min_path_len) & ((count == 1) if unique_path else True)
        candidates = np.flatnonzero(far)
        if len(candidates) == 0:
            continue
        goal = int(rng.choice(candidates))
        question = grid.copy()
        question[start], question[goal] = START, GOAL
        answer = question.copy()
        path = shortest_path(question != WALL, start, goal)
        answer[path[1:-1]] = PATH
        return question, answer
    return None


def path_problem(question: np.ndarray, answer: np.ndarray) -> str | None:
    """Why `answer` is not a shortest S->G path through the open cells of `question` (None when it is)."""
    q, a = np.asarray(question).ravel(), np.asarray(answer).ravel()
    if q.shape != a.shape:
        return f"question has {q.size} cells but answer has {a.size}"
    for tok, name in ((START, "S"), (GOAL, "G")):
        if np.count_nonzero(q == tok) != 1:
            return f"question has {np.count_nonzero(q == tok)} '{name}' cells, expected exactly 1"
    on_path = a == PATH
    if np.any(q == PATH):
        return "question already contains path cells 'o'"
    if np.any(a[~on_path] != q[~on_path]):
        return "answer differs from the question outside the path cells"
    if np.any(q[on_path] != OPEN):
        return "a path cell 'o' lies on a wall, S or G of the question"
    start, goal = int(np.flatnonzero(q == START)[0]), int(np.flatnonzero(q == GOAL)[0])
    best, _ = bfs(q != WALL, start)
    if best[goal] < 0:
        return "G is not reachable from S"
    members = on_path.copy()
    members[[start, goal]] = True
    along, _ = bfs(members, start)
    if along[goal] < 0:
        return "the marked path does not connect S to G"
    if int(members.sum()) - 1 != along[goal]:
        return f"the marked cells are not a simple path ({int(members.sum())} cells for {along[goal]} moves)"
    if along[goal] != best[goal]:
        return f"the marked path takes {along[goal]} moves but the shortest takes {best[goal]}"
    return None


def to_text(tokens: np.ndarray, size: int) -> str:
    chars = np.array(["?", *CHARSET])
    return "\n".join("".join(chars[np.asarray(tokens).reshape(size, size)[r]]) for r in range(size))
