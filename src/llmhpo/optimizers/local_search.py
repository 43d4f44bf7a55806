"""Iterated local search (Lourenco, Martin & Stuetzle 2003).

A local search samples neighbours of its centre at radius ``step`` and moves to any
improvement; after ``2 d`` neighbours without one, the radius halves. When it falls under
``step_min`` the local optimum is reached: a kick of size ``kick`` from the best point
found starts the next local search ("better" acceptance criterion).
"""

from __future__ import annotations

import numpy as np

from llmhpo.optimizers.base import Optimizer


class IteratedLocalSearch(Optimizer):
    name = "local_search"
    _state_attrs = ("centre", "f_centre", "step", "fails", "kick_pending", "restarts")

    def __init__(self, dim, rng=None, budget=None, step: float = 0.2, step_min: float = 1e-3, kick: float = 0.3):
        super().__init__(dim, rng, budget)
        if not (0 < step_min <= step and kick >= 0):
            raise ValueError(f"need 0 < step_min <= step and kick >= 0, got step={step!r}, step_min={step_min!r}, "
                             f"kick={kick!r}")
        self.step0, self.step_min, self.kick = step, step_min, kick
        self.centre: np.ndarray | None = None
        self.f_centre: float | None = None
        self.step, self.fails, self.kick_pending, self.restarts = step, 0, False, 0

    def _neighbour(self) -> np.ndarray:
        u = self.rng.standard_normal(self.dim)
        return np.clip(self.centre + self.step * u / np.linalg.norm(u), 0, 1)

    def _ask(self, n):
        out = []
        if self.centre is None:
            if any(c.info.get("role") == "start" for c in self.pending.values()):
                return []
            return [(self.from_prior(self.rng.random(self.dim)), {"role": "start"})]
        for _ in range(n):
            if self.kick_pending:
                x_best, _ = self.best
                x = np.clip(x_best + self.kick * self.rng.standard_normal(self.dim), 0, 1)
                self.kick_pending = False
                out.append((x, {"role": "kick", "restart": self.restarts}))
            else:
                out.append((self._neighbour(), {"role": "neighbour", "step": self.step}))
        return out

    def _tell(self, candidate, value):
        role = candidate.info.get("role")
        if role == "start" and value is None:
            self.centre = None  # try another start
            return
        if role in ("start", "kick"):
            if value is not None or self.centre is None:
                self.centre, self.f_centre = candidate.x.copy(), value
                self.step, self.fails = self.step0, 0
            return
        if value is not None and self.f_centre is not None and value < self.f_centre:
            self.centre, self.f_centre, self.fails = candidate.x.copy(), value, 0
            return
        self.fails += 1
        if self.fails >= 2 * self.dim:
            self.step, self.fails = self.step / 2, 0
            if self.step < self.step_min:
                self.kick_pending, self.restarts = True, self.restarts + 1
                self.step = self.step0
