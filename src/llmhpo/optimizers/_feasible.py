"""Constraint models for BO: one GP per constraint value and the probability that a point
meets every constraint, so that the acquisition is weighted by it (Gardner et al. 2014,
"Bayesian optimization with inequality constraints", eq. 3: EI(x) * prod_k P(c_k(x) <= 0);
Gelbart, Snoek & Adams 2014: before any feasible point, the probability of feasibility
alone). The constraints are taken as independent of each other and of the objectives.

A constraint value follows Optuna's convention: <= 0 where it holds. Each is standardised
(not warped: a warp would move the threshold) and its GP fitted with ``fit_gp``; the
threshold 0 becomes ``t = -mean / sd``. No storage, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmhpo.optimizers._gp import FastPosterior, fit_gp


@dataclass
class ConstraintModel:
    """A fitted GP of one constraint value (standardised) and where 0 lies on its scale."""

    model: object
    threshold: float

    def log_pof(self, post: FastPosterior, x):
        """log P(c(x) <= 0) for x (b, d): (b,)."""
        import torch

        mean, sd = post(x)
        return torch.special.log_ndtr((self.threshold - mean) / sd)


def fit_constraints(X: np.ndarray, C: np.ndarray, kernel: str, noise: str,
                    maxiter: int | None) -> list[ConstraintModel]:
    """X: (n, d) points with constraint values C: (n, k), <= 0 where one holds -> one model each."""
    out = []
    for j in range(C.shape[1]):
        c = C[:, j]
        mu, sd = float(c.mean()), float(c.std())
        sd = sd if sd > 0 else max(abs(mu), 1.0)
        out.append(ConstraintModel(fit_gp(X, (c - mu) / sd, kernel, noise, maxiter=maxiter), -mu / sd))
    return out


def log_feasibility(models: list[ConstraintModel]):
    """x (b, d) tensor -> (b,): the log probability that x meets every constraint."""
    posts = [FastPosterior(m.model) for m in models]

    def log_pof(x):
        return sum(m.log_pof(p, x) for m, p in zip(models, posts))

    return log_pof


def weighted(acqf, models: list[ConstraintModel]):
    """``acqf`` (a log acquisition, X (b, 1, d) -> (b,)) plus the log probability of
    feasibility: the log of the feasibility-weighted acquisition. ``acqf`` None: the
    probability of feasibility alone (no feasible point yet)."""
    from botorch.acquisition import AcquisitionFunction

    log_pof = log_feasibility(models)

    class _Weighted(AcquisitionFunction):
        def forward(self, X):
            x = X.reshape(-1, X.shape[-1])
            return log_pof(x) if acqf is None else acqf(X) + log_pof(x)

    return _Weighted(models[0].model)


def outcome_constraints(m: int, models: list[ConstraintModel]) -> list:
    """For BoTorch's MC acquisitions (qLogNEHVI ``constraints=``) on a model list whose
    outputs are m objectives then the constraints: callables samples (..., m + k) -> (...),
    <= 0 where constraint j holds."""
    return [lambda Z, j=j, t=cm.threshold: Z[..., m + j] - t for j, cm in enumerate(models)]


def feasible_rows(C: np.ndarray) -> np.ndarray:
    """C: (n, k) constraint values (NaN rows: none told) -> (n,) bool: holds, or not constrained."""
    return np.all(np.isnan(C) | (C <= 0), axis=1)
