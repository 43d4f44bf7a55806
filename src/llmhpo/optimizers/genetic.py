"""A steady-state genetic algorithm: (mu + 1) replacement, tournament selection,
blend crossover (BLX-alpha, Eshelman & Schaffer 1993) and Gaussian mutation.

Steady state suits asynchronous parallel trials: every finished trial can enter the
population at once, and every free worker can get a child of the current population.
"""

from __future__ import annotations

import numpy as np

from llmhpo.optimizers.base import Optimizer


class GeneticAlgorithm(Optimizer):
    name = "genetic"
    _state_attrs = ("population", "fitness")

    def __init__(self, dim, rng=None, budget=None, pop_size: int = 10, tournament: int = 2,
                 alpha: float = 0.5, mutation_rate: float | None = None, mutation_scale: float = 0.1):
        super().__init__(dim, rng, budget)
        if pop_size < 2 or tournament < 1:
            raise ValueError("need pop_size >= 2 and tournament >= 1")
        if mutation_rate is not None and not 0 <= mutation_rate <= 1:
            raise ValueError(f"mutation_rate is a probability in [0, 1], got {mutation_rate!r}")
        if not (alpha >= 0 and mutation_scale > 0):
            raise ValueError(f"need alpha >= 0 and mutation_scale > 0, got {alpha!r} and {mutation_scale!r}")
        self.mu, self.k, self.alpha = pop_size, tournament, alpha
        self.p_mut = 1.0 / dim if mutation_rate is None else mutation_rate
        self.sigma = mutation_scale
        self.population = np.empty((0, dim))
        self.fitness = np.empty(0)

    def _after_load(self):
        # an empty (0, d) population comes back from JSON as shape (0,): give it its shape back
        self.population = np.asarray(self.population, dtype=float).reshape(-1, self.dim)
        self.fitness = np.asarray(self.fitness, dtype=float).reshape(-1)

    def _select(self) -> np.ndarray:
        idx = self.rng.integers(0, len(self.fitness), size=self.k)
        return self.population[idx[np.argmin(self.fitness[idx])]]

    def _ask(self, n):
        out = []
        for _ in range(n):
            if len(self.fitness) + len(self.pending) + len(out) < self.mu or len(self.fitness) < 2:
                out.append((self.from_prior(self.rng.random(self.dim)), {"origin": "initial"}))
                continue
            a, b = self._select(), self._select()
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            span = hi - lo
            child = self.rng.uniform(lo - self.alpha * span, hi + self.alpha * span)
            mutate = self.rng.random(self.dim) < self.p_mut
            child = child + mutate * self.sigma * self.rng.standard_normal(self.dim)
            out.append((np.clip(child, 0, 1), {"origin": "offspring"}))
        return out

    def _tell(self, candidate, value):
        if value is None:
            return
        self.population = np.vstack([self.population, candidate.x[None]])
        self.fitness = np.append(self.fitness, value)
        if len(self.fitness) > self.mu:
            keep = np.argsort(self.fitness, kind="stable")[: self.mu]
            self.population, self.fitness = self.population[keep], self.fitness[keep]
