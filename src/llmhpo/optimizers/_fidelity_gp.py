"""A GP over (configuration, resource), fitted on every rung's scores: what multi-fidelity
search with ``[fidelity] model = "all_rungs"`` proposes from and promotes by.

The resource is one more input of the GP: s = log(r / r_0) / log(r_K / r_0) in [0, 1]
(rung 0 at s = 0, the top rung at s = 1), beside the configuration x in [0, 1]^d, as BOCA does
(Kandasamy et al. 2017: the fidelity as an input of one GP). A configuration contributes one
point per rung it reached, so a low rung's score informs the prediction of the top rung's
score where the curves of nearby configurations, at any rung, say how scores move from rung to
rung. The kernel (``gap_kernel``) splits a score into the top rung's score f(x) and a gap that
closes at the top rung, each with its own lengthscales, so that what sets how fast a
configuration learns need not set where it ends; one stationary Matérn kernel over (x, s)
(``rungs = "stationary"``, the first model, kept for comparison) has one set of lengthscales
for both and was measured to carry an early-rung effect to the top rung (docs/benchmarks.md).
The same question as freeze-thaw BO (Swersky et al. 2014), DyHPO (Wistuba et al. 2022) and
FABOLAS (Klein et al. 2017) answer with learning-curve kernels or a deep kernel.

Its two uses: the predicted top-rung score of each configuration seen (posterior mean at
s = 1), which ranks a rung's configurations for promotion; and log EI at s = 1 against the
best of those predictions, maximised over x with s fixed to 1, for a new configuration.

The hyperparameters are refitted when the data grew by a fifth, else the last ones condition
on the data (as ``BayesianOptimization._fit``); they are part of the optimiser's state, so a
resumed study fits the same model. No storage, no printing; torch is imported where used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llmhpo.optimizers._gp import fit_gp, hyperparameters, posterior_mean_std, refit_due, seeded_torch, warp_outcomes

#: the fit's own torch seed: a model is a function of its data and warm hyperparameters only,
#: never of how many times it was fitted (no draw from the optimiser's stream)
_FIT_SEED = 0


#: the kernels over (x, s): "gap" (the default) models the top rung's score and, apart from it,
#: how a lower rung's score falls short of it; "stationary", one Matérn kernel over (x, s)
RUNG_KERNELS = ("gap", "stationary")


def gap_kernel(d: int, rbf: bool = False):
    """The kernel over (x, s) in [0, 1]^(d + 1) of ``RungsGP(rungs="gap")``: the score at rung s is
    the top rung's score f(x) plus a gap g(x, s) that closes at the top rung,

        k((x, s), (x', s')) = k_f(x, x') + (1 - s)(1 - s') c k_g((x, s), (x', s')),

    k_f an ARD kernel over x, k_g one over (x, s), both with the dimension-scaled lengthscale
    prior of ``fit_gp``, c the gap's variance: the form of BoTorch's
    ``LinearTruncatedFidelityKernel`` (Wu et al. 2019, multi-fidelity knowledge gradient), with
    its bias term written over (x, s). A variable that sets how fast a configuration learns
    (how large its gap is early) is then learnt by k_g's lengthscales, apart from what sets
    where it ends (k_f's): the stationary kernel over (x, s) has one set of lengthscales for
    both, and carries an early-rung effect to the top rung (measured: docs/benchmarks.md)."""
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    from gpytorch.kernels import Kernel, ScaleKernel
    from gpytorch.priors import GammaPrior

    class _Closing(Kernel):
        """(1 - s)(1 - s'): the gap's envelope, 0 at the top rung (s = 1, the last input)."""

        def forward(self, x1, x2, diag=False, **params):
            a, b = 1.0 - x1[..., -1], 1.0 - x2[..., -1]
            return a * b if diag else a[..., :, None] * b[..., None, :]

    top = get_covar_module_with_dim_scaled_prior(d, use_rbf_kernel=rbf, active_dims=list(range(d)))
    gap = ScaleKernel(get_covar_module_with_dim_scaled_prior(d + 1, use_rbf_kernel=rbf),
                      outputscale_prior=GammaPrior(2.0, 0.5))
    return top + _Closing() * gap


def rung_coordinate(r: float, r_min: float, r_max: float) -> float:
    """s in [0, 1] of resource r on rungs r_min .. r_max: log-spaced, as the rungs are."""
    return math.log(r / r_min) / math.log(r_max / r_min)


class RungsGP:
    """The GP over (x, s) and its warm hyperparameters. ``fit(Z, y)``: Z (n, d + 1) points
    (x, s), y (n,) scores to minimise; the fitted model predicts warped values to maximise."""

    def __init__(self, kernel: str = "matern", noise: str = "low", warp: bool = True, maxiter: int = 50,
                 rungs: str = "gap"):
        if rungs not in RUNG_KERNELS:
            raise ValueError(f"unknown kernel over rungs {rungs!r}: use one of {', '.join(RUNG_KERNELS)}")
        self.kernel, self.noise, self.warp, self.maxiter, self.rungs = kernel, noise, warp, maxiter, rungs
        self.hyper: dict[str, Any] = {}
        self.hyper_n = 0  # observations at the last hyperparameter fit
        self.model = None
        self._data: tuple[bytes, bytes] | None = None  # what ``model`` was fitted on

    def state_dict(self) -> dict[str, Any]:
        return {"hyper": self.hyper, "hyper_n": self.hyper_n, "rungs": self.rungs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved hyperparameters, if they are this kernel's (a study saved before the gap
        kernel has a stationary kernel's: the next fit starts afresh)."""
        same = state.get("rungs", "stationary") == self.rungs
        self.hyper = dict(state.get("hyper", {})) if same else {}
        self.hyper_n = int(state.get("hyper_n", 0)) if same else 0
        self.model, self._data = None, None

    def fit(self, Z: np.ndarray, y: np.ndarray) -> bool:
        """Fit (or condition) on Z (n, d + 1), y (n,); True when the hyperparameters changed
        (the optimiser's state should be saved). The same data twice: the same model."""
        Z, y = np.asarray(Z, dtype=float), np.asarray(y, dtype=float)
        key = (Z.tobytes(), y.tobytes())
        if self.model is not None and key == self._data:
            return False
        z = warp_outcomes(-y, self.warp)
        refit = refit_due(len(z), self.hyper_n, bool(self.hyper))
        with seeded_torch(_FIT_SEED):
            covar = gap_kernel(Z.shape[1] - 1, self.kernel == "rbf") if self.rungs == "gap" else None
            self.model = fit_gp(Z, z, self.kernel, self.noise, warm=self.hyper or None,
                                maxiter=self.maxiter if refit else 0, covar=covar)
        self._data = key
        if refit:
            self.hyper, self.hyper_n = hyperparameters(self.model), len(z)
        return refit

    def top_mean(self, X: np.ndarray) -> np.ndarray:
        """X (m, d) configurations -> (m,) posterior mean at the top rung (s = 1), in the
        model's warped units: higher is better."""
        X = np.asarray(X, dtype=float).reshape(len(X), -1)
        mean, _ = posterior_mean_std(self.model, at_top(X))
        return mean


def at_top(X: np.ndarray) -> np.ndarray:
    """(m, d) configurations -> (m, d + 1) points at the top rung, s = 1."""
    X = np.asarray(X, dtype=float)
    return np.hstack([X, np.ones((len(X), 1))])


def at_top_acqf(acqf, d: int):
    """An acquisition over (x, s) restricted to s = 1, as one over x alone (BoTorch's
    ``FixedFeatureAcquisitionFunction``, on our fast acquisitions): X (b, 1, d) -> (b,)."""
    import torch
    from botorch.acquisition import AcquisitionFunction

    class _AtTop(AcquisitionFunction):
        def forward(self, X):
            one = torch.ones(*X.shape[:-1], 1, dtype=X.dtype)
            return acqf(torch.cat([X, one], dim=-1))

    return _AtTop(acqf.model)
