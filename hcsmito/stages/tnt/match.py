"""TNTs matched to a reference by their end points (benchmarks and tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["match_tnts"]


def match_tnts(
    found: pd.DataFrame, truth: pd.DataFrame, *, tolerance_um: float = 3.0
) -> list[tuple[int, int]]:
    """Pairs (row in ``found``, row in ``truth``) whose endpoint pairs agree.

    Two TNTs match when, with their ends paired the better way round, both ends lie within
    ``tolerance_um`` of each other (3-D distance; lateral only when a ``z*_um`` is NaN).
    Pairs are taken greedily from the closest; each row is used once.

    Parameters
    ----------
    found, truth : pandas.DataFrame
        Tables with ``z0_um, y0_um, x0_um, z1_um, y1_um, x1_um``.
    tolerance_um : float, µm
        Largest endpoint distance (default 3 µm).
    """
    cols0, cols1 = ["z0_um", "y0_um", "x0_um"], ["z1_um", "y1_um", "x1_um"]
    if len(found) == 0 or len(truth) == 0:
        return []
    f0, f1 = found[cols0].to_numpy(float), found[cols1].to_numpy(float)
    t0, t1 = truth[cols0].to_numpy(float), truth[cols1].to_numpy(float)

    def dist(a: np.ndarray, c: np.ndarray) -> np.ndarray:
        d = a[:, None, :] - c[None, :, :]
        d = np.where(np.isnan(d), 0.0, d)
        return np.sqrt((d**2).sum(-1))

    cost = np.minimum(
        np.maximum(dist(f0, t0), dist(f1, t1)), np.maximum(dist(f0, t1), dist(f1, t0))
    )
    pairs = []
    used_f, used_t = set(), set()
    for flat in np.argsort(cost, axis=None):
        i, j = divmod(int(flat), cost.shape[1])
        if cost[i, j] > tolerance_um:
            break
        if i in used_f or j in used_t:
            continue
        used_f.add(i)
        used_t.add(j)
        pairs.append((i, j))
    return pairs
