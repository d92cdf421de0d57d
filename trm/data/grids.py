"""The 8 dihedral transforms of a grid, numbered as in the reference (so `t{k}` names in identifiers.json
mean the same thing there and here).

    0 identity   1 rot90   2 rot180   3 rot270   4 flip left-right   5 flip up-down
    6 transpose  7 anti-transpose (flip left-right of rot90)
"""

from __future__ import annotations

import numpy as np

DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    """Transform the last two axes of `grid` (so a batch (N, H, W) is transformed grid by grid)."""
    ax = (-2, -1)
    if tid == 0:
        return grid
    if tid in (1, 2, 3):
        return np.rot90(grid, k=tid, axes=ax)
    if tid == 4:
        return np.flip(grid, axis=-1)
    if tid == 5:
        return np.flip(grid, axis=-2)
    if tid == 6:
        return np.swapaxes(grid, -2, -1)
    if tid == 7:
        return np.flip(np.rot90(grid, k=1, axes=ax), axis=-1)
    raise ValueError(f"dihedral transform id {tid} is not in 0..7")


def inverse_dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    return dihedral(grid, DIHEDRAL_INVERSE[tid])
