"""Pictures of puzzles: text for the terminal and PNG via matplotlib (Agg), for Sudoku, Maze, ARC and Hanoi.

Rows are token arrays as stored on disk (trm.data.format); predictions use the same tokens, labels may hold
-100 for ignored positions. Each example is drawn as panels: input | label | prediction (when given).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trm.data import arc, hanoi, maze
from trm.data.format import IGNORE_LABEL, Metadata

KINDS = ("sudoku", "maze", "arc", "hanoi")
# the standard ARC palette (colours 0..9), as on arcprize.org
ARC_COLOURS = (
    "#000000",
    "#0074D9",
    "#FF4136",
    "#2ECC40",
    "#FFDC00",
    "#AAAAAA",
    "#F012BE",
    "#FF851B",
    "#7FDBFF",
    "#870C25",
)
MAZE_COLOURS = {
    0: "#ffffff",
    maze.WALL: "#303030",
    maze.OPEN: "#ffffff",
    maze.START: "#2ECC40",
    maze.GOAL: "#FF4136",
    maze.PATH: "#0074D9",
}


def detect_kind(data_path: Path | None, meta: Metadata | None) -> str:
    """The puzzle kind of a dataset folder: from build_info.json, else from vocabulary and sequence length."""
    if data_path is not None and (data_path / "build_info.json").is_file():
        builder = json.loads((data_path / "build_info.json").read_text()).get("builder", "")
        for kind in KINDS:
            if builder.startswith(kind):
                return kind
    if meta is None:
        raise ValueError("cannot tell the puzzle kind; pass --kind " + "|".join(KINDS))
    side = round(meta.seq_len**0.5)
    if (meta.vocab_size, meta.seq_len) in ((6, 16), (11, 81)):
        return "sudoku"
    if meta.vocab_size == arc.VOCAB_SIZE and meta.seq_len == 900:
        return "arc"
    if meta.vocab_size == 6 and side * side == meta.seq_len:
        return "maze"
    if meta.seq_len % 16 == 0:
        return "hanoi"
    raise ValueError(f"vocab {meta.vocab_size} / seq_len {meta.seq_len} matches no known puzzle; pass --kind")


def guess_kind(inputs: np.ndarray) -> str:
    """The puzzle kind from token rows alone (for a predictions file without its dataset)."""
    seq_len = inputs.shape[1]
    if seq_len in (16, 81):
        return "sudoku"
    has_pad = bool((inputs == 0).any())
    if seq_len == 900 and has_pad:
        return "arc"
    side = round(seq_len**0.5)
    if side * side == seq_len and not has_pad and inputs.max() <= maze.PATH:
        return "maze"
    if seq_len % 16 == 0 and has_pad:
        return "hanoi"
    raise ValueError(f"cannot tell the puzzle kind of rows of length {seq_len}; pass --kind or --data")


def hanoi_encoding(data_path: Path | None, labels: np.ndarray) -> str:
    """'action' or 'state': from build_info.json when there is one, else from the label tokens."""
    if data_path is not None and (data_path / "build_info.json").is_file():
        enc = json.loads((data_path / "build_info.json").read_text()).get("args", {}).get("encoding")
        if enc in ("action", "state"):
            return enc
    return "action" if (np.asarray(labels) >= hanoi.DISK_OFFSET).any() else "state"


@dataclass
class Example:
    inputs: np.ndarray
    labels: np.ndarray
    preds: np.ndarray | None = None
    title: str = ""


# ---------------------------------------------------------------------------------------------- text


def _sudoku_text(row: np.ndarray, ref: np.ndarray | None = None) -> list[str]:
    n = round(len(row) ** 0.5)
    box = round(n**0.5)
    lines = []
    for r in range(n):
        if r and r % box == 0:
            lines.append("-+-".join(["-" * (2 * box - 1)] * box))
        cells = []
        for c in range(n):
            v = int(row[r * n + c])
            ch = "." if v <= 1 else str(v - 1)
            if ref is not None and ref[r * n + c] not in (IGNORE_LABEL, v):
                ch = "!"  # wrong digit in a prediction
            cells.append(ch)
        lines.append(" | ".join(" ".join(cells[s : s + box]) for s in range(0, n, box)))
    return lines


def _maze_text(row: np.ndarray, ref: np.ndarray | None = None) -> list[str]:
    side = round(len(row) ** 0.5)
    chars = np.array(["_", *maze.CHARSET, "?"])
    text = chars[np.clip(np.asarray(row), 0, len(chars) - 1)]
    if ref is not None:
        text = np.where((ref != IGNORE_LABEL) & (ref != row), "X", text)
    return ["".join(text[r * side : (r + 1) * side]) for r in range(side)]


def _arc_text(row: np.ndarray, ref: np.ndarray | None = None) -> list[str]:
    grid = arc_visible(row)
    return [
        "".join(
            "." if v == arc.PAD else "|" if v == arc.EOS else str(v - arc.COLOUR_OFFSET) if v < arc.VOCAB_SIZE else "?"
            for v in r
        )
        for r in grid
    ]


def arc_visible(row: np.ndarray) -> np.ndarray:
    """The canvas cut to the bounding box of everything that is not PAD (grid + EOS frame)."""
    side = arc.canvas_side(np.asarray(row).size)
    canvas = np.asarray(row).reshape(side, side)
    rows, cols = np.nonzero(canvas != arc.PAD)
    if len(rows) == 0:
        return canvas[:1, :1]
    return canvas[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _hanoi_state_lines(state: np.ndarray) -> list[str]:
    """Three pegs in ASCII, top row first; disk d is drawn 2d + 3 characters wide."""
    n = len(state)
    width = 2 * n + 3
    stacks = [sorted((d for d in range(n) if state[d] == peg), reverse=True) for peg in hanoi.PEGS]
    lines = []
    for level in range(n - 1, -1, -1):
        cells = []
        for disks in stacks:
            if level < len(disks):
                d = disks[level]
                cells.append(("=" * (d + 1) + str(d % 10) + "=" * (d + 1)).center(width))
            else:
                cells.append("|".center(width))
        lines.append(" ".join(cells))
    lines.append(" ".join(f"peg {p}".center(width, "_") for p in hanoi.PEGS))
    return lines


def hanoi_move_text(inputs: np.ndarray, row: np.ndarray, encoding: str) -> str:
    state, target = hanoi.decode_state(inputs)
    try:
        disk, dest = hanoi.decode_move(state, row, encoding)
        hanoi.check_move(state, disk, dest)
        return f"move disk {disk} to peg {dest} (goal: all on peg {target})"
    except hanoi.IllegalMove as e:
        return f"illegal: {e}"


def example_text(kind: str, ex: Example, encoding: str = "action") -> str:
    if kind == "hanoi":
        state, _ = hanoi.decode_state(ex.inputs)
        label = hanoi_move_text(ex.inputs, ex.labels, encoding)
        out = [ex.title, *_hanoi_state_lines(state), f"label: {label}"]
        if ex.preds is not None:
            same = np.all((ex.labels == IGNORE_LABEL) | (ex.labels == 0) | (ex.preds == ex.labels))
            out.append(f"pred:  {hanoi_move_text(ex.inputs, ex.preds, encoding)} [{'correct' if same else 'wrong'}]")
        return "\n".join(out)
    draw = {"sudoku": _sudoku_text, "maze": _maze_text, "arc": _arc_text}[kind]
    panels = [("input", draw(ex.inputs)), ("label", draw(np.where(ex.labels == IGNORE_LABEL, 0, ex.labels)))]
    if ex.preds is not None:
        panels.append(("prediction", draw(ex.preds, ex.labels)))
    height = max(len(p[1]) for p in panels)
    widths = [max(len(t), *(len(s) for s in lines)) for t, lines in panels]
    out = [ex.title, "   ".join(t.ljust(w) for (t, _), w in zip(panels, widths))]
    for i in range(height):
        cells = [(lines[i] if i < len(lines) else "").ljust(w) for (_, lines), w in zip(panels, widths)]
        out.append("   ".join(cells))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- PNG


def _draw_sudoku(ax, row: np.ndarray, given: np.ndarray, ref: np.ndarray | None) -> None:
    n = round(len(row) ** 0.5)
    box = round(n**0.5)
    for k in range(n + 1):
        lw = 2.0 if k % box == 0 else 0.5
        ax.plot([0, n], [k, k], color="black", lw=lw)
        ax.plot([k, k], [0, n], color="black", lw=lw)
    for cell, v in enumerate(np.asarray(row).tolist()):
        if v <= 1:
            continue
        r, c = divmod(cell, n)
        colour = "black" if given[cell] > 1 else "#0074D9"
        if ref is not None and ref[cell] not in (IGNORE_LABEL, v):
            colour = "#FF4136"
            ax.add_patch(_rect(c, n - 1 - r, 1, 1, "#FFD6D6"))
        ax.text(c + 0.5, n - 0.5 - r, str(v - 1), ha="center", va="center", color=colour, fontsize=max(6, 90 // n))
    ax.set_xlim(0, n)
    ax.set_ylim(0, n)


def _rect(x: float, y: float, w: float, h: float, colour: str, **kw: object):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=colour, edgecolor=kw.pop("edgecolor", "none"), **kw)


def _draw_cells(ax, grid: np.ndarray, colours: dict[int, str], ref_wrong: np.ndarray | None = None) -> None:
    from matplotlib.colors import ListedColormap

    h, w = grid.shape
    top = max(colours) + 1
    cmap = ListedColormap([colours.get(i, "#ff00ff") for i in range(top)])
    ax.imshow(np.clip(grid, 0, top - 1), cmap=cmap, vmin=0, vmax=top - 1, interpolation="nearest")
    if ref_wrong is not None and ref_wrong.any():
        ys, xs = np.nonzero(ref_wrong)
        ax.scatter(xs, ys, marker="x", color="#FF4136", s=max(4, 600 // max(h, w)), linewidths=1)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def _arc_colours() -> dict[int, str]:
    c = {arc.PAD: "#ffffff", arc.EOS: "#dddddd"}
    c.update({k + arc.COLOUR_OFFSET: col for k, col in enumerate(ARC_COLOURS)})
    return c


def _draw_hanoi(ax, state: np.ndarray, caption: str) -> None:
    n = len(state)
    for p in range(3):
        ax.add_patch(_rect(p * (n + 2) + n / 2 + 0.8, 0, 0.4, n + 1, "#8B5A2B"))
    for peg_i, peg in enumerate(hanoi.PEGS):
        disks = sorted((d for d in range(n) if state[d] == peg), reverse=True)
        for level, d in enumerate(disks):
            width = d + 1.5
            x = peg_i * (n + 2) + n / 2 + 1 - width / 2
            ax.add_patch(_rect(x, level, width, 0.85, ARC_COLOURS[1 + d % 9], edgecolor="black", lw=0.5))
    ax.add_patch(_rect(0, -0.3, 3 * (n + 2), 0.3, "#5a3a1a"))
    ax.set_xlim(0, 3 * (n + 2))
    ax.set_ylim(-0.5, n + 1.5)
    ax.set_title(caption, fontsize=8)


def _panel(kind: str, ax, row: np.ndarray, ex: Example, ref: np.ndarray | None, encoding: str, caption: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal")
    if kind == "sudoku":
        _draw_sudoku(ax, row, ex.inputs, ref)
        ax.set_title(caption, fontsize=9)
    elif kind == "maze":
        side = round(len(row) ** 0.5)
        wrong = None if ref is None else ((ref != IGNORE_LABEL) & (ref != row)).reshape(side, side)
        _draw_cells(ax, np.asarray(row).reshape(side, side), MAZE_COLOURS, wrong)
        ax.set_title(caption, fontsize=9)
    elif kind == "arc":
        side = arc.canvas_side(np.asarray(row).size)
        canvas = np.asarray(row).reshape(side, side)
        wrong = None if ref is None else ((ref != IGNORE_LABEL) & (ref != row)).reshape(side, side)
        rows, cols = np.nonzero(canvas != arc.PAD)
        if len(rows):
            sl = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            canvas, wrong = canvas[sl], None if wrong is None else wrong[sl]
        _draw_cells(ax, canvas, _arc_colours(), wrong)
        ax.set_title(caption, fontsize=9)
    else:
        state, _ = hanoi.decode_state(ex.inputs)
        if row is ex.inputs:
            _draw_hanoi(ax, state, f"{caption}: goal peg {hanoi.decode_state(ex.inputs)[1]}")
            return
        try:
            disk, dest = hanoi.decode_move(state, row, encoding)
            nxt = hanoi.apply_move(state, disk, dest)
            _draw_hanoi(ax, nxt, f"{caption}: disk {disk} -> peg {dest}")
        except hanoi.IllegalMove as e:
            _draw_hanoi(ax, state, f"{caption}: illegal ({e})")


def save_png(kind: str, examples: list[Example], path: Path, encoding: str = "action") -> Path:
    """One row of panels per example (input, label, prediction) in a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3 if any(ex.preds is not None for ex in examples) else 2
    row_height = 2.0 if kind == "hanoi" else 3.4
    fig, axes = plt.subplots(len(examples), cols, figsize=(3.2 * cols, row_height * len(examples)), squeeze=False)
    for i, ex in enumerate(examples):
        panels = [(ex.inputs, None, "input"), (ex.labels, None, "label")]
        if ex.preds is not None:
            right = bool(np.all((ex.labels == IGNORE_LABEL) | (ex.preds == ex.labels)))
            panels.append((ex.preds, ex.labels, "prediction " + ("(correct)" if right else "(wrong)")))
        for j in range(cols):
            ax = axes[i, j]
            if j >= len(panels):
                ax.axis("off")
                continue
            row, ref, caption = panels[j]
            labels_shown = np.where(row == IGNORE_LABEL, 0, row) if j == 1 else row
            _panel(kind, ax, labels_shown, ex, ref, encoding, caption)
        axes[i, 0].set_ylabel(ex.title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")  # what matplotlib would write; the caller names this path
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path
