"""Simulated annealing (Kirkpatrick et al. 1983) with a batch of neighbours per ask.

Worse moves are accepted with probability exp(-delta / T), where delta is the value increase
divided by the spread of the values seen so far, so ``T0`` does not depend on the scale of
the objective. T is multiplied by ``cooling`` after every tell; the neighbourhood radius
shrinks with it, down to ``step_min``.
"""

from __future__ import annotations

import numpy as np

from llmhpo.optimizers.base import Optimizer


class SimulatedAnnealing(Optimizer):
    name = "annealing"
    _state_attrs = ("current", "f_current", "T", "step")

    def __init__(self, dim, rng=None, budget=None, T0: float = 1.0, cooling: float = 0.95,
                 step: float = 0.25, step_min: float = 0.01):
        super().__init__(dim, rng, budget)
        if not (0 < cooling < 1) or T0 <= 0 or not (0 < step_min <= step):
            raise ValueError("need T0 > 0, 0 < cooling < 1 and 0 < step_min <= step")
        self.cooling, self.step_min = cooling, step_min
        self.current: np.ndarray | None = None
        self.f_current: float | None = None
        self.T, self.step = float(T0), float(step)

    def _ask(self, n):
        if self.current is None:
            return [(self.from_prior(self.rng.random(self.dim)), {"move": "start"}) for _ in range(n)]
        out = []
        for _ in range(n):
            x = self.current + self.step * self.rng.standard_normal(self.dim)
            x = np.abs(x)  # reflect at the walls instead of piling points on them
            x = 1.0 - np.abs(1.0 - x)
            out.append((np.clip(x, 0, 1), {"move": "neighbour", "T": self.T}))
        return out

    def _tell(self, candidate, value):
        if value is None:
            return
        if self.f_current is None:
            self.current, self.f_current = candidate.x.copy(), value
            return
        _, ys = self._observed()
        scale = float(np.std(ys)) or abs(self.f_current) or 1.0
        delta = (value - self.f_current) / scale
        if delta <= 0 or self.rng.random() < np.exp(-delta / self.T):
            self.current, self.f_current = candidate.x.copy(), value
        self.T *= self.cooling
        self.step = max(self.step_min, self.step * np.sqrt(self.cooling))
