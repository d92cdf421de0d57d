"""Tower of Hanoi: optimal solutions, a move simulator, and the seeds' two token encodings.

A state holds the peg (1, 2, 3) of every disk, disk 0 being the smallest. Encodings (PAD 0):
    input           [peg of disk 0 .. peg of disk N-1, target peg, PAD ...]
    action label    [4 + moved disk, destination peg, PAD ..., target peg at position N, PAD ...]
    state label     [next state (N pegs), target peg, PAD ...]
"""

from __future__ import annotations

import numpy as np

PAD = 0
PEGS = (1, 2, 3)
DISK_OFFSET = 4


class IllegalMove(ValueError):
    """A move that breaks the rules; the message says which rule."""


def solve(num_disks: int, source: int, target: int) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """The optimal 2^N - 1 moves from all disks on `source` to all on `target`: (states, moves)."""
    aux = 6 - source - target
    state = np.full(num_disks, source, dtype=np.int64)
    states, moves = [state.copy()], []
    # iterative form of the recursion: (disk, from, to, via, expanded?)
    stack: list[tuple[int, int, int, int, bool]] = [(num_disks - 1, source, target, aux, False)]
    while stack:
        disk, frm, to, via, expanded = stack.pop()
        if disk < 0:
            continue
        if expanded:
            state[disk] = to
            states.append(state.copy())
            moves.append((disk, to))
            continue
        stack.append((disk - 1, via, to, frm, False))
        stack.append((disk, frm, to, via, True))
        stack.append((disk - 1, frm, via, to, False))
    return states, moves


def check_move(state: np.ndarray, disk: int, dest: int) -> None:
    """Raise IllegalMove unless moving `disk` to peg `dest` is allowed in `state`."""
    n = len(state)
    if not 0 <= disk < n:
        raise IllegalMove(f"disk {disk} does not exist (there are {n} disks)")
    if dest not in PEGS:
        raise IllegalMove(f"peg {dest} does not exist (pegs are 1, 2, 3)")
    if state[disk] == dest:
        raise IllegalMove(f"disk {disk} is already on peg {dest}")
    if np.any(state[:disk] == state[disk]):
        raise IllegalMove(f"disk {disk} is under a smaller disk")
    if np.any(state[:disk] == dest):
        raise IllegalMove(f"peg {dest} holds a smaller disk than disk {disk}")


def apply_move(state: np.ndarray, disk: int, dest: int) -> np.ndarray:
    check_move(state, disk, dest)
    nxt = np.array(state, copy=True)
    nxt[disk] = dest
    return nxt


def seq_len_for(max_disks: int) -> int:
    """The seeds' sequence length: max disks + 16, rounded up to a multiple of 16."""
    return -(-(max_disks + 16) // 16) * 16


def encode(
    state: np.ndarray, nxt: np.ndarray, move: tuple[int, int], target: int, seq_len: int, encoding: str
) -> tuple[np.ndarray, np.ndarray]:
    n = len(state)
    inp = np.zeros(seq_len, dtype=np.uint8)
    inp[:n], inp[n] = state, target
    lab = np.zeros(seq_len, dtype=np.uint8)
    if encoding == "action":
        lab[0], lab[1] = DISK_OFFSET + move[0], move[1]
        lab[n] = target
    else:
        lab[:n], lab[n] = nxt, target
    return inp, lab


def decode_state(inputs: np.ndarray) -> tuple[np.ndarray, int]:
    """(state, target peg) from an encoded input row."""
    row = np.asarray(inputs)
    n = int(np.count_nonzero(row)) - 1
    return row[:n].astype(np.int64), int(row[n])


def decode_move(state: np.ndarray, pred: np.ndarray, encoding: str) -> tuple[int, int]:
    """The (disk, destination) a predicted label row proposes; raises IllegalMove when it proposes none."""
    row = np.asarray(pred).astype(np.int64)
    if encoding == "action":
        return int(row[0]) - DISK_OFFSET, int(row[1])
    n = len(state)
    changed = np.flatnonzero(row[:n] != state)
    if len(changed) != 1:
        raise IllegalMove(f"the predicted next state changes {len(changed)} disks, expected exactly 1")
    return int(changed[0]), int(row[changed[0]])
