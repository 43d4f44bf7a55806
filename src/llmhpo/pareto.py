"""The Pareto set and the hypervolume of points that are all minimised (a maximised
objective is negated first): the numeric core of reading a multi-objective study.

A point a dominates b when a <= b in every objective and a < b in one. The hypervolume
of a set against a reference point r is the measure of the region dominated by the set
and bounded by r (Zitzler & Thiele 1998): exact by a sweep for two objectives, by
Optuna's WFG routine (While et al. 2012) for more. ``chebyshev_pick`` chooses one point of
a Pareto set by weights (Miettinen 1999, the weighted Chebyshev problem).
"""

from __future__ import annotations

import numpy as np


def non_dominated(Y) -> np.ndarray:
    """Y: (n, m) values to minimise -> (n,) bool, True where no other row dominates the row.
    Equal rows do not dominate each other: both are kept."""
    Y = np.asarray(Y, dtype=float).reshape(len(Y), -1)
    keep = np.ones(len(Y), dtype=bool)
    for i in range(len(Y)):
        others = np.delete(Y, i, axis=0)
        if len(others) and np.any(np.all(others <= Y[i], axis=1) & np.any(others < Y[i], axis=1)):
            keep[i] = False
    return keep


def hypervolume(Y, ref) -> float:
    """Y: (n, m) values to minimise; ref: (m,) reference point. Points not strictly better
    than ``ref`` in every objective add nothing; no such point: 0."""
    Y = np.asarray(Y, dtype=float).reshape(len(Y), -1)
    ref = np.asarray(ref, dtype=float).reshape(-1)
    if Y.shape[1] != len(ref):
        raise ValueError(f"points have {Y.shape[1]} objectives but the reference point has {len(ref)}")
    Y = Y[np.all(Y < ref, axis=1)]
    if not len(Y):
        return 0.0
    Y = np.unique(Y[non_dominated(Y)], axis=0)
    if Y.shape[1] == 1:
        return float(ref[0] - Y[:, 0].min())
    if Y.shape[1] == 2:
        Y = Y[np.argsort(Y[:, 0])]  # on a 2-D front the second objective then falls
        widths = np.diff(np.append(Y[:, 0], ref[0]))
        return float(np.sum(widths * (ref[1] - Y[:, 1])))
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(Y, ref, assume_pareto=True))


def chebyshev_pick(Y, weights) -> int:
    """Y: (n, m) values to minimise (a Pareto set), weights: (m,) >= 0 -> the row index
    nearest the ideal point in the weighted Chebyshev sense: each objective normalised over
    the rows to [0, 1] (0 its best value, 1 its worst; a constant objective is 0), then the
    smallest max_i w_i u_i, ties broken by the weighted sum, then the first row. Unlike a
    weighted sum, every point of a front, concave parts included, is some weighting's pick."""
    Y = np.asarray(Y, dtype=float).reshape(len(Y), -1)
    w = np.asarray(weights, dtype=float).reshape(-1)
    if Y.shape[1] != len(w) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"need {Y.shape[1]} weights >= 0, not all 0; got {w.tolist()}")
    lo, span = Y.min(axis=0), np.ptp(Y, axis=0)
    U = (Y - lo) / np.where(span > 0, span, 1.0)
    key = np.lexsort(((U * w).sum(axis=1), (U * w).max(axis=1)))
    return int(key[0])
