"""Bayesian optimisation: a GP surrogate with (log) expected improvement.

As in the report (3.4): an initial Latin-hypercube design of ``n_init`` points (10), then a
BoTorch ``SingleTaskGP`` (inputs in [0, 1]^d, outputs standardised) and
``LogExpectedImprovement`` (Ament et al. 2023). A batch ``ask(q)`` optimises
``qLogExpectedImprovement`` jointly over q points with the still-running candidates as
``X_pending``, so parallel workers get distinct, informative points.

torch, BoTorch and scipy.stats are imported where they are used, not at import time.
"""

from __future__ import annotations

import warnings

import numpy as np

from llmhpo.optimizers._gp import dtype, fit_gp, seeded_torch
from llmhpo.optimizers.base import Optimizer


class BayesianOptimization(Optimizer):
    name = "bo"
    _state_attrs = ("design", "n_design_asked")

    def __init__(self, dim, rng=None, budget=None, n_init: int = 10, num_restarts: int = 8,
                 raw_samples: int = 256):
        super().__init__(dim, rng, budget)
        if n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {n_init}")
        self.n_init, self.num_restarts, self.raw_samples = n_init, num_restarts, raw_samples
        from scipy.stats import qmc

        self.design = qmc.LatinHypercube(d=dim, seed=self._seed()).random(n_init)
        self.n_design_asked = 0

    def _ask(self, n):
        out = []
        while len(out) < n and self.n_design_asked < self.n_init:
            out.append((self.design[self.n_design_asked].copy(), {"phase": "initial"}))
            self.n_design_asked += 1
        X, y = self._observed()
        if len(out) == n:
            return out
        if len(y) < 2:
            # nothing to model yet: wait for the initial design unless it all failed
            if self.pending or out:
                return out
            return out + [(self.rng.random(self.dim), {"phase": "random"}) for _ in range(n - len(out))]
        q = n - len(out)
        pending = [c.x for c in self.pending.values()] + [x for x, _ in out]
        return out + [(x, {"phase": "model"}) for x in self._acquire(X, y, q, pending)]

    def suggest(self, X, y, pending):
        if len(y) < 2:
            return None
        return self._acquire(np.asarray(X, dtype=float), np.asarray(y, dtype=float), 1, list(pending))[0]

    def _acquire(self, X, y, q, pending):
        import torch
        from botorch.acquisition import LogExpectedImprovement, qLogExpectedImprovement
        from botorch.optim import optimize_acqf

        with seeded_torch(self._seed()):
            model = fit_gp(X, -y)  # BoTorch maximises
            best_f = float((-y).max())
            dt = dtype()
            bounds = torch.stack([torch.zeros(self.dim, dtype=dt), torch.ones(self.dim, dtype=dt)])
            if q == 1 and not pending:
                acqf = LogExpectedImprovement(model, best_f=best_f)
            else:
                X_pending = torch.as_tensor(np.asarray(pending), dtype=dt) if pending else None
                acqf = qLogExpectedImprovement(model, best_f=best_f, X_pending=X_pending)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # L-BFGS-B restarts are retried by BoTorch itself
                cand, _ = optimize_acqf(acqf, bounds=bounds, q=q, num_restarts=self.num_restarts,
                                        raw_samples=self.raw_samples)
        pts = cand.detach().numpy().reshape(q, self.dim)
        # a duplicate of a known or pending point teaches nothing: replace it by a random one
        seen = [*X, *pending]
        for i in range(q):
            others = seen + list(pts[:i])
            if others and np.min(np.linalg.norm(np.asarray(others) - pts[i], axis=1)) < 1e-6:
                pts[i] = self.rng.random(self.dim)
        return list(pts)

    def _observe(self, candidate, value):
        """Warm-start values are in the history already; the GP uses them at the next ask."""
