"""GP surrogate shared by the model-based optimisers: BoTorch ``SingleTaskGP`` on [0, 1]^d
inputs with standardised outputs, fitted by marginal likelihood. No storage, no printing.

torch, BoTorch and GPyTorch are imported inside the functions: importing this module (and
so checking an optimiser's options) must stay cheap."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np


def dtype():
    """The dtype of every tensor here: torch.float64."""
    import torch

    return torch.float64


@contextmanager
def seeded_torch(seed: int):
    """Run torch code on a private random stream (no global RNG is touched for good)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def fit_gp(X: np.ndarray, y: np.ndarray):
    """X: (n, d) points in [0, 1]; y: (n,) values to *maximise*. Returns a fitted SingleTaskGP."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    train_X = torch.as_tensor(X, dtype=dtype())
    train_Y = torch.as_tensor(y, dtype=dtype()).reshape(-1, 1)
    model = SingleTaskGP(train_X, train_Y, outcome_transform=Standardize(m=1))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit_gpytorch_mll(mll)
        except Exception:  # a failed fit keeps the prior hyperparameters: still a usable model
            pass
    model.eval()
    return model


def posterior_mean_std(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X: (m, d) -> mean (m,), std (m,) in the units the model was trained on."""
    import torch

    with torch.no_grad():
        post = model.posterior(torch.as_tensor(X, dtype=dtype()))
        mean = post.mean.reshape(-1).numpy()
        std = post.variance.clamp_min(0).sqrt().reshape(-1).numpy()
    return mean, std
