"""Bayesian Multi-Scale Optimistic Optimization (Wang, Shakibi, Jin & de Freitas 2014).

SOO in which a GP decides whether a new child is worth an evaluation. With N real
evaluations so far and beta_N = sqrt(2 log(pi^2 N^2 / (6 eta))), a child whose optimistic
bound cannot beat the best value f+ found so far gets its pessimistic bound as an
approximate score and costs no evaluation (the paper's UCB(x) < f+ -> g(x) = LCB(x),
written here for minimisation: mu - beta sigma > f+ -> g(x) = mu + beta sigma).

Bounded cost: the GP (``_gp.fit_gp`` on standardised values) is refitted only when new
values came in, its hyperparameters warm-started and re-optimised only when the data grew
by a fifth (else the model is only conditioned on the new data); at most
``max_silent_sweeps`` sweeps in a row may be scored entirely by the GP, and the tree holds at
most ``max_nodes_per_eval`` nodes per real evaluation, after which sweeps are evaluated for
real: the bookkeeping grows linearly with the evaluations on every function.
"""

from __future__ import annotations

import math

from llmhpo.optimizers._gp import (fit_gp, hyperparameters, posterior_mean_std, preload, refit_due, seeded_torch,
                                   standardise)
from llmhpo.optimizers.partition.soo import SOO


class BaMSOO(SOO):
    name = "bamsoo"
    _state_attrs = SOO._state_attrs + ("n_skipped", "silent_sweeps", "hyper", "hyper_n")
    #: sweeps in a row that the GP scored entirely; after that many, one sweep is evaluated
    #: for real, so that a pessimistic GP cannot grow the tree without end between evaluations
    max_silent_sweeps = 10
    #: tree nodes per real evaluation at most; beyond it children are evaluated for real
    max_nodes_per_eval = 40

    def __init__(self, dim, rng=None, budget=None, K: int = 3, h_max: int | str | None = "sqrt", eta: float = 0.05):
        super().__init__(dim, rng, budget, K=K, h_max=h_max)
        if not (0 < eta < 1):
            raise ValueError(f"eta must be in (0, 1), got {eta}")
        self.eta = eta
        self.n_skipped = 0
        self.silent_sweeps = 0
        self._model = None
        self._model_n = 0
        self._y_shift, self._y_scale = 0.0, 1.0
        self.hyper: dict = {}
        self.hyper_n = 0

    def beta(self, N: int) -> float:
        return math.sqrt(2 * math.log(math.pi**2 * max(N, 1) ** 2 / (6 * self.eta)))

    def _next_batch(self):
        preload()  # the GP's libraries load in the background while the first evaluations run
        X, y = self._observed()
        # a sweep whose children were all scored by the GP adds no data: keep the fitted model
        if len(y) >= 2 and (self._model is None or self._model_n != len(y)):
            z, self._y_shift, self._y_scale = standardise(y)
            with seeded_torch(0):  # the fit is deterministic given the data
                if not refit_due(len(y), self.hyper_n, bool(self.hyper)):
                    self._model = fit_gp(X, z, warm=self.hyper, maxiter=0)
                else:
                    self._model = fit_gp(X, z, warm=self.hyper or None, maxiter=100)
                    self.hyper, self.hyper_n = hyperparameters(self._model), len(y)
            self._model_n = len(y)
        batch = super()._next_batch()
        self.silent_sweeps = 0 if batch else self.silent_sweeps + 1
        return batch

    def _children_to_evaluate(self, child):
        if (self._model is not None and self.silent_sweeps < self.max_silent_sweeps
                and len(self.nodes) < self.max_nodes_per_eval * max(len(self.y), 1)):
            X, y = self._observed()
            mu, sd = posterior_mean_std(self._model, child["x"][None])
            mu, sd = mu * self._y_scale + self._y_shift, sd * self._y_scale
            b = self.beta(len(y))
            lcb, ucb = float(mu[0] - b * sd[0]), float(mu[0] + b * sd[0])
            if lcb > float(y.min()):
                child["value"], child["approx"] = ucb, True
                self.n_skipped += 1
                return []
        return super()._children_to_evaluate(child)
