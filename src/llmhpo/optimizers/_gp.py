"""GP surrogate shared by the model-based optimisers: a BoTorch ``SingleTaskGP`` on [0, 1]^d
inputs, fitted by maximum a posteriori, and the outcome warping it is fitted to. No storage,
no printing.

The model (the defaults, ``kernel="matern"``, ``noise="low"``):

- Matérn-5/2 kernel with one lengthscale per input (ARD) and the dimension-scaled log-normal
  lengthscale prior of Hvarfner, Hellsten & Nardi (2024), ``LogNormal(sqrt 2 + log(d) / 2,
  sqrt 3)``, lengthscales >= 0.025 (BoTorch's ``get_covar_module_with_dim_scaled_prior``);
- Gaussian noise with a floor of 1e-6 (of the standardised outcome's variance) and a weak
  ``Gamma(1.1, 30)`` prior (mode 0.003, as Optuna's GPSampler): a deterministic objective is
  interpolated, a noisy one (an lm-eval score on a few hundred questions) learns its noise.
  BoTorch's default (``noise="botorch"``) keeps the noise >= 1e-4 under a ``LogNormal(-4, 1)``
  prior (median 0.018): it cannot interpolate, so BO stops refining near a minimum;
- outcomes warped before the fit (``warp_outcomes``): standardised, a Yeo-Johnson power
  transform fitted by maximum likelihood (HEBO, Cowen-Rivers et al. 2022), standardised
  again, so a heavy tail (rosenbrock, a diverged run) neither flattens the rest of the
  surface nor drags the mean.

Hyperparameters can be warm-started from the previous fit (``warm``), which is what keeps
an ask under a second at 200 observations.

torch, BoTorch and GPyTorch are imported inside the functions: importing this module (and
so checking an optimiser's options) must stay cheap."""

from __future__ import annotations

import copy
import math
import threading
import warnings
from contextlib import contextmanager

import numpy as np


_preloading: threading.Thread | None = None


def preload() -> None:
    """Import torch, GPyTorch and BoTorch in a background thread (once per process): a
    model-based optimiser calls it once its first points are out, so that its first model
    (1.5 s of imports on a small machine) is not what keeps a parallel study's workers
    waiting. Only imports: the GP functions below wait for it before they work, so nothing
    of theirs (warning filters, torch's random state) runs beside it. Not a daemon thread:
    an interpreter that ends mid-import of torch can abort."""
    global _preloading
    if _preloading is None:
        def imports() -> None:
            try:
                import botorch.acquisition  # noqa: F401  (and torch, gpytorch with it)
                import botorch.fit  # noqa: F401
                import botorch.models  # noqa: F401
            except Exception:  # the ask that needs them reports what is missing
                pass

        _preloading = threading.Thread(target=imports, name="llmhpo-preload")
        _preloading.start()


def _loaded() -> None:
    """Wait for ``preload``'s imports, if they run."""
    if _preloading is not None and _preloading is not threading.current_thread():
        _preloading.join()


def loading() -> bool:
    """Whether ``preload`` is still importing."""
    return _preloading is not None and _preloading.is_alive()


def dtype():
    """The dtype of every tensor here: torch.float64."""
    import torch

    return torch.float64


@contextmanager
def seeded_torch(seed: int):
    """Run torch code on a private random stream (no global RNG is touched for good), on
    one intra-op thread: the GP's matrices have at most a few hundred rows, where waking a
    pool of threads costs more than it saves (10x slower fits measured on 2 busy cores)."""
    _loaded()
    import torch

    with one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextmanager
def one_thread():
    """torch on one intra-op thread inside the block (see ``seeded_torch``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def standardise(y) -> tuple[np.ndarray, float, float]:
    """y (n,) -> (z, mean, sd) with z = (y - mean) / sd; sd is 1 when all values are equal."""
    y = np.asarray(y, dtype=float)
    mean, sd = float(y.mean()) if len(y) else 0.0, float(y.std()) if len(y) else 0.0
    sd = sd if sd > 0 else 1.0
    return (y - mean) / sd, mean, sd


def warp_outcomes(y: np.ndarray, warp: bool = True) -> np.ndarray:
    """y: (n,) values to maximise -> (n,) standardised, Yeo-Johnson-warped, standardised
    again (monotone: the order of the values, and so the incumbent, is kept). ``warp=False``
    only standardises."""
    return fit_warp(y, warp)[0]


class Warp:
    """The monotone map ``warp_outcomes`` applied after standardising: Yeo-Johnson with
    exponent ``lam`` (None: none), then standardised by ``mean`` and ``sd``.
    ``unwarp`` maps warped values (a tensor, e.g. posterior samples) back to the
    standardised scale, differentiably."""

    def __init__(self, lam: float | None = None, mean: float = 0.0, sd: float = 1.0):
        self.lam, self.mean, self.sd = lam, mean, sd

    def unwarp(self, w):
        import torch

        if self.lam is None:
            return w
        lam, v = self.lam, w * self.sd + self.mean
        tiny = 1e-9  # beyond the warp's range (a posterior sample past its asymptote): clamped
        pos, neg = v.clamp_min(0.0), v.clamp_max(0.0)
        if abs(lam) > 1e-12:
            up = (lam * pos + 1.0).clamp_min(tiny) ** (1.0 / lam) - 1.0
        else:
            up = torch.expm1(pos)
        if abs(lam - 2.0) > 1e-12:
            down = 1.0 - (1.0 - (2.0 - lam) * neg).clamp_min(tiny) ** (1.0 / (2.0 - lam))
        else:
            down = -torch.expm1(-neg)
        return torch.where(v >= 0, up, down)


def fit_warp(y: np.ndarray, warp: bool = True) -> tuple[np.ndarray, Warp]:
    """``warp_outcomes``, and the warp it fitted: (z (n,), Warp) with z = the warp applied to
    ``standardise(y)[0]``."""
    _loaded()
    z, _, _ = standardise(y)
    if warp and len(z) >= 4 and z.std() > 0:
        from scipy.stats import yeojohnson

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                w, lam = yeojohnson(z)
                if np.all(np.isfinite(w)) and w.std() > 0:
                    return (w - w.mean()) / w.std(), Warp(float(lam), float(w.mean()), float(w.std()))
            except (ValueError, FloatingPointError, OverflowError):
                pass
    return z, Warp()


def refit_due(n: int, fitted_n: int, fitted: bool = True) -> bool:
    """Whether a GP's hyperparameters are to be refitted on ``n`` observations, last fitted on
    ``fitted_n``. They move little between close data sets, so they are refitted when the data
    grew by a fifth (at 10, 12, 14, 16, 19, ... observations) or shrank (another data set),
    and otherwise the model only conditions on the new data (``fit_gp(..., maxiter=0)``)."""
    return not fitted or not fitted_n <= n < fitted_n + max(1, fitted_n // 5)


def fit_gp(X: np.ndarray, y: np.ndarray, kernel: str = "matern", noise: str = "low",
           warm: dict[str, list] | None = None, maxiter: int | None = None, covar=None):
    """X: (n, d) points in [0, 1]; y: (n,) values to *maximise*, standardised (``warp_outcomes``).

    kernel: "matern" (Matérn-5/2) or "rbf", both ARD with the dimension-scaled prior;
    noise: "low" (floor 1e-6, Gamma(1.1, 30) prior) or "botorch" (BoTorch's default: floor
    1e-4, LogNormal(-4, 1) prior). warm: hyperparameters of a previous fit
    (``hyperparameters``) to start from; maxiter: L-BFGS-B iterations at most; covar: a GPyTorch
    kernel in place of ``kernel``'s (``FastPosterior`` evaluates it through GPyTorch). Returns
    the fitted model, in eval mode.
    """
    _loaded()
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.utils.gpytorch_modules import (
        get_covar_module_with_dim_scaled_prior,
        get_gaussian_likelihood_with_lognormal_prior,
    )
    from gpytorch.constraints import GreaterThan
    from gpytorch.likelihoods import GaussianLikelihood
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from gpytorch.priors import GammaPrior

    if kernel not in ("matern", "rbf") or noise not in ("low", "botorch"):
        raise ValueError(f"unknown GP kernel {kernel!r} or noise {noise!r}: use matern/rbf and low/botorch")
    train_X = torch.as_tensor(X, dtype=dtype())
    train_Y = torch.as_tensor(y, dtype=dtype()).reshape(-1, 1)
    if noise == "low":
        likelihood = GaussianLikelihood(noise_prior=GammaPrior(1.1, 30.0),
                                        noise_constraint=GreaterThan(1e-6, transform=None, initial_value=1e-4))
    else:
        likelihood = get_gaussian_likelihood_with_lognormal_prior()
    if covar is None:
        covar = get_covar_module_with_dim_scaled_prior(X.shape[1], use_rbf_kernel=kernel == "rbf")
    model = SingleTaskGP(train_X, train_Y, likelihood=likelihood, covar_module=covar, outcome_transform=None)
    if warm:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in warm and tuple(np.shape(warm[name])) == tuple(p.shape):
                    p.copy_(torch.as_tensor(warm[name], dtype=p.dtype))
    if maxiter == 0:  # condition on the data with the given hyperparameters, no fit
        model.eval()
        return model
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    kwargs = {"optimizer_kwargs": {"options": {"maxiter": maxiter}}} if maxiter else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit_gpytorch_mll(mll, **kwargs)
        except Exception:  # a failed fit keeps the prior hyperparameters: still a usable model
            pass
    model.eval()
    return model


def hyperparameters(model) -> dict[str, list]:
    """The raw hyperparameters of a fitted model as plain lists (JSON state, ``warm``)."""
    return {name: p.detach().cpu().numpy().tolist() for name, p in model.named_parameters()
            if all(math.isfinite(v) for v in np.ravel(p.detach().cpu().numpy()))}


class FastPosterior:
    """The posterior of a fitted ``fit_gp`` model written out (Rasmussen & Williams 2006,
    Alg. 2.1) on the model's own hyperparameters: the values of ``model.posterior`` (tested)
    at a tenth of the cost per call, without GPyTorch's machinery; what L-BFGS-B on the
    acquisition, and BaMSOO's scoring of every child, spend their time on. A kernel other than
    ``fit_gp``'s own Matérn and RBF (the GP over rungs', ``covar``) is evaluated by GPyTorch.
    ``post(x)``: x (b, d) tensor -> mean (b,), std (b,), differentiable.

    ``pending``: (p, d) points being evaluated, conditioned on as if observed. With
    ``fantasies = 0`` at their posterior mean (Kriging believer: the mean is unchanged, the
    variance around them shrinks); with ``fantasies = k`` at k joint draws of their values
    from the posterior (rows of ``self.fantasy``), so that ``post(x)`` gives k means, (b, k),
    and one std: the variance does not depend on the values."""

    def __init__(self, model, pending=None, fantasies: int = 0):
        import torch
        from gpytorch.kernels import MaternKernel, RBFKernel

        kern = model.covar_module
        # fit_gp's own kernels written out; any other (a ``covar``) through GPyTorch
        # (a copy without gradients: the posterior's factors hold no graph to the hyperparameters)
        self.kern = None if type(kern) in (MaternKernel, RBFKernel) else copy.deepcopy(kern).requires_grad_(False)
        self.matern = hasattr(kern, "nu")
        self.inv_ls = None if self.kern is not None else 1.0 / kern.lengthscale.detach().reshape(1, -1)
        self.c = model.mean_module.constant.detach()
        self.noise = model.likelihood.noise.detach().reshape(-1)[0]
        self._factor(model.train_inputs[0].detach(), (model.train_targets.detach() - self.c).reshape(-1, 1))
        self.fantasy = None
        if pending is not None and len(pending):
            X = self.train_X
            P = torch.as_tensor(np.asarray(pending, dtype=float), dtype=X.dtype).reshape(-1, X.shape[1])
            with torch.no_grad():
                ks = self.k(P, X)
                mean = (ks @ self.alpha).reshape(-1)  # without the constant, as the targets
                if fantasies:
                    V = torch.linalg.solve_triangular(self.L, ks.T, upper=False)
                    cov = self.k(P, P) - V.T @ V + self.noise * torch.eye(len(P), dtype=X.dtype)
                    L_P = torch.linalg.cholesky(cov + 1e-9 * torch.eye(len(P), dtype=X.dtype))
                    z = torch.randn(fantasies, len(P), dtype=X.dtype)
                    values = mean[None, :] + z @ L_P.T  # (k, p) joint draws
                    self.fantasy = values + self.c
                else:
                    values = mean[None, :]
            self._factor(torch.cat([X, P]), torch.cat([self.r.expand(-1, len(values)), values.T]))

    def _factor(self, X, r) -> None:
        """Condition on targets r (n, k) at X (n, d), minus the constant mean."""
        import torch

        self.train_X, self.r = X, r
        K = self.k(X, X) + (self.noise + 1e-10) * torch.eye(len(X), dtype=X.dtype)
        self.L = torch.linalg.cholesky(K)
        self.alpha = torch.cholesky_solve(r, self.L)  # (n, k)

    def k(self, A, B):
        """Kernel matrix (a, b) of A (a, d) and B (b, d); prior variance 1 (standardised data)
        for fit_gp's own kernels."""
        import torch

        if self.kern is not None:
            return self.kern(A, B).to_dense()
        sq = (((A[:, None, :] - B[None, :, :]) * self.inv_ls) ** 2).sum(-1)
        if not self.matern:
            return torch.exp(-0.5 * sq)
        r = torch.sqrt(sq.clamp_min(1e-30))
        return (1.0 + math.sqrt(5.0) * r + 5.0 / 3.0 * sq) * torch.exp(-math.sqrt(5.0) * r)

    def __call__(self, x):
        import torch

        ks = self.k(x, self.train_X)  # (b, n)
        mean = self.c + ks @ self.alpha  # (b, k)
        if self.fantasy is None:
            mean = mean[:, 0]
        V = torch.linalg.solve_triangular(self.L, ks.T, upper=False)
        prior = 1.0 if self.kern is None else self.kern(x, x, diag=True)
        return mean, (prior - (V * V).sum(0)).clamp_min(1e-12).sqrt()


def fast_log_ei(model, best_f: float, pending=None, fantasies: int = 16):
    """LogEI (Ament et al. 2023) on ``FastPosterior``: the values of BoTorch's
    ``LogExpectedImprovement`` (tested). An ``AcquisitionFunction``, so ``optimize_acqf``
    takes it; X: (b, 1, d) -> (b,).

    ``pending``: (p, d) points being evaluated. The improvement of x is then the expected
    improvement over the pending points' outcomes too, E[max(f(x) - max(best_f, f(P)), 0)],
    which is what BoTorch's ``qLogExpectedImprovement`` with ``X_pending`` estimates (x joins
    the batch of pending points): here ``fantasies`` joint draws of f(P), each conditioned
    on exactly and averaged, with the improvement analytic in x, so it costs about what one
    point costs. ``fantasies = 0``: a Kriging believer (pending points at their mean, the
    incumbent unchanged): cheaper, but it crowds a batch around the incumbent (measured:
    docs/benchmarks.md)."""
    import torch
    from botorch.acquisition import AcquisitionFunction
    from botorch.acquisition.analytic import _log_ei_helper

    post = FastPosterior(model, pending, fantasies)
    if post.fantasy is not None:
        best = torch.clamp(post.fantasy.max(dim=1).values, min=best_f)  # (k,)
        log_k = math.log(len(best))

    class _FastLogEI(AcquisitionFunction):
        def forward(self, X):
            mean, sigma = post(X.reshape(-1, X.shape[-1]))
            if post.fantasy is None:
                return _log_ei_helper((mean - best_f) / sigma) + sigma.log()
            s = sigma[:, None]
            return torch.logsumexp(_log_ei_helper((mean - best[None, :]) / s) + s.log(), dim=1) - log_k

    return _FastLogEI(model)


def posterior_mean_std(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X: (m, d) -> mean (m,), std (m,) in the units the model was trained on."""
    import torch

    fast = getattr(model, "_llmhpo_fast", None)
    if fast is None:
        fast = FastPosterior(model)
        model._llmhpo_fast = fast
    with torch.no_grad(), one_thread():
        mean, std = fast(torch.as_tensor(np.asarray(X, dtype=float).reshape(-1, fast.train_X.shape[1]), dtype=dtype()))
    return mean.numpy(), std.numpy()


def prior_weighted(acqf, log_prior, w: float, eps: float):
    """``acqf`` (a log acquisition, X (b, 1, d) -> (b,)) plus ``w`` times the log of the prior
    density mixed with the uniform, (1 - eps) pi(x) + eps (``log_prior``: X (n, d) -> (n,)
    log pi): the log of a(x) pi_eps(x)^w, piBO's weighting (Hvarfner et al. 2022, eq. 4)."""
    from botorch.acquisition import AcquisitionFunction

    from llmhpo.priors import mixed_log_pdf

    class _PriorWeighted(AcquisitionFunction):
        def forward(self, X):
            return acqf(X) + w * mixed_log_pdf(log_prior(X.reshape(-1, X.shape[-1])), eps)

    return _PriorWeighted(acqf.model)
