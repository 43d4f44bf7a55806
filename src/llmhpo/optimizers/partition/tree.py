"""What the partition-based optimisers share: boxes of [0, 1]^d, their K-ary split, and
a batch ("sweep") engine that turns one iteration's independent evaluations into ``ask(n)``.

Nodes are plain dicts (JSON state): ``id, parent, depth, lo, hi, x, value, approx, expanded``;
``value`` is None while the centre is being evaluated, ``approx`` marks a value a model gave.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmhpo.optimizers.base import Candidate, Optimizer


def new_node(nodes: list[dict], lo, hi, depth: int, parent: int | None, value=None, approx=False) -> dict:
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    node = {"id": len(nodes), "parent": parent, "depth": depth, "lo": lo, "hi": hi,
            "x": (lo + hi) / 2, "value": value, "approx": approx, "expanded": False}
    nodes.append(node)
    return node


def split_box(lo: np.ndarray, hi: np.ndarray, K: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K equal parts of the box along its widest side (the first one on ties)."""
    i = int(np.argmax(hi - lo))
    edges = np.linspace(lo[i], hi[i], K + 1)
    parts = []
    for k in range(K):
        a, b = lo.copy(), hi.copy()
        a[i], b[i] = edges[k], edges[k + 1]
        parts.append((a, b))
    return parts


class SweepOptimizer(Optimizer):
    """An optimiser whose iterations produce a batch of independent evaluations.

    ``_next_batch()`` runs when the previous batch is fully told and returns the points of
    the next one; ``ask(n)`` hands them out n at a time and returns nothing while a batch is
    still running (an algorithm step needs all its values). A point whose configuration was
    evaluated already (a clipped or snapped centre, a revisited lattice point) is not
    evaluated again: it gets the known value (a failure: None) at once.
    """

    uses_prior = False  # a deterministic partition of the box has no place for a density

    _state_attrs: tuple[str, ...] = ("queue", "outstanding")
    max_silent_iterations = 1000
    #: start the next iteration while evaluations of the last one are still out (``ask`` is
    #: called when a worker is free): points in flight are left out of the selection, so no
    #: worker waits for the slowest trial of a sweep. False: the batch-synchronous algorithm.
    #: With one worker both are the sequential algorithm (nothing is in flight at an ask).
    asynchronous = False

    def __init__(self, dim, rng=None, budget=None):
        super().__init__(dim, rng, budget)
        self.queue: list[list[Any]] = []  # [x, info] not yet asked
        self.outstanding = 0  # asked, not yet told

    def _ask(self, n):
        # an iteration may need no evaluation (inherited or model-given scores): go on to the next
        for _ in range(self.max_silent_iterations):
            if self.queue or (self.outstanding and not self.asynchronous):
                break
            self.queue = self._resolve_known(self._next_batch())
            if self.outstanding and not self.queue:
                break  # nothing more to start until a result comes in
        taken, self.queue = self.queue[:n], self.queue[n:]
        self.outstanding += len(taken)
        return [(x, info) for x, info in taken]

    def in_flight(self) -> set:
        """Node ids whose evaluation is asked or queued and not yet told."""
        return {c.info.get("node") for c in self.pending.values()} | {info.get("node") for _, info in self.queue}

    def _tell(self, candidate, value):
        self.outstanding -= 1
        self._record(candidate, value)

    def _resolve_known(self, batch) -> list[list[Any]]:
        """The points of a batch still to evaluate, snapped; the others are recorded now with
        the value their configuration already has."""
        todo = []
        told = np.asarray(self.X, dtype=float).reshape(len(self.X), self.dim)
        for x, info in batch:
            x = self.snap_point(x)
            if len(told):
                dist = np.max(np.abs(told - x), axis=1)
                i = int(np.argmin(dist))
                if dist[i] <= self.same_tol:
                    self._record(Candidate(-1, x, dict(info, cached=True)), self.y[i])
                    continue
            todo.append([x, info])
        return todo

    def _next_batch(self) -> list[tuple[np.ndarray, dict]]:
        raise NotImplementedError

    def _record(self, candidate, value: float | None) -> None:
        raise NotImplementedError
