"""Score levels on the host side of a GPU kernel (pure numpy, shared by cuda.py and wgpu.py).

GPU kernels never compare scores as floats: they count and compare integer levels (see
evaluate.score_levels), and the host turns levels back into scores with these tables.
"""

import numpy as np


def _valid(neurons: int) -> np.ndarray:
    """(t, e) pairs that can occur: t TRUE and e EMPTY reads of `neurons` neurons."""
    return np.add.outer(np.arange(neurons + 1), np.arange(neurons + 1)) <= neurons


def level_scores(score_table: np.ndarray, level_table: np.ndarray, n_levels: int) -> np.ndarray:
    """The score of each of the model's levels that this tier's tables reach (0 elsewhere)."""
    valid = _valid(score_table.shape[0] - 1)
    scores = np.zeros(n_levels)
    scores[level_table[valid]] = score_table[valid]
    return scores


def tier_levels(level_table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(used, local): the model's levels this tier can reach, ascending, and its (t, e) table
    renumbered into them. A kernel counts local levels (one tier has few: neurons + 1 when
    EMPTY scores 0), so a model whose tiers reach many levels together still fits."""
    used = np.unique(level_table[_valid(level_table.shape[0] - 1)])
    return used, np.searchsorted(used, level_table).clip(0, len(used) - 1).astype(np.int32)
