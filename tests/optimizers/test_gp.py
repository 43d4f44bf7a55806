"""The GP helpers of the model-based optimisers (``optimizers/_gp.py``)."""

import numpy as np
import pytest
import torch

from llmhpo.optimizers._gp import FastPosterior, fast_log_ei, fit_gp, warp_outcomes


@pytest.mark.parametrize("kernel", ["matern", "rbf"])
@pytest.mark.parametrize("noise", ["low", "botorch"])
def test_fast_posterior_and_log_ei_equal_botorch(kernel, noise):
    rng = np.random.default_rng(0)
    X = rng.random((25, 3))
    z = warp_outcomes(np.sin(3 * X.sum(1)))
    model = fit_gp(X, z, kernel, noise, maxiter=30)
    Xq = torch.as_tensor(rng.random((40, 3)))
    _equal_botorch(model, Xq, float(z.max()), atol=1e-8)


def _equal_botorch(model, Xq, best_f: float, atol: float, rtol: float = 1e-7) -> None:
    """FastPosterior's mean and std, and fast_log_ei, against BoTorch's on the points Xq."""
    from botorch.acquisition import LogExpectedImprovement

    with torch.no_grad():
        post = model.posterior(Xq)
        mean, std = FastPosterior(model)(Xq)
        np.testing.assert_allclose(mean.numpy(), post.mean.reshape(-1).numpy(), atol=atol)
        np.testing.assert_allclose(std.numpy(), post.variance.sqrt().reshape(-1).numpy(), atol=atol)
        ours = fast_log_ei(model, best_f)(Xq.unsqueeze(1))
        ref = LogExpectedImprovement(model, best_f=best_f)(Xq.unsqueeze(1))
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=rtol, atol=1e-3)


def test_fast_posterior_and_log_ei_equal_botorch_on_the_rung_gap_kernel():
    """The GP over (configuration, rung) is evaluated through GPyTorch's kernel: the same
    posterior, variance included (its prior variance is not 1 below the top rung)."""
    from llmhpo.optimizers._fidelity_gp import gap_kernel

    rng = np.random.default_rng(1)
    Z = np.hstack([rng.random((30, 2)), rng.choice([0.0, 0.5, 1.0], (30, 1))])
    z = warp_outcomes(np.sin(3 * Z[:, :2].sum(1)) + 2.0 * (1.0 - Z[:, 2]))
    model = fit_gp(Z, z, maxiter=30, covar=gap_kernel(2))
    Zq = torch.as_tensor(np.hstack([rng.random((40, 2)), rng.random((40, 1))]))
    _equal_botorch(model, Zq, float(z.max()), atol=1e-6, rtol=1e-4)  # log EI's far tails: -1e4
    acqf = fast_log_ei(model, float(z.max()))  # differentiable in x, and in x only: twice
    for _ in range(2):
        x = Zq[:3].clone().unsqueeze(1).requires_grad_(True)
        acqf(x).sum().backward()
        assert torch.isfinite(x.grad).all()


def test_low_noise_model_interpolates_a_deterministic_function():
    rng = np.random.default_rng(1)
    X = rng.random((30, 2))
    z = warp_outcomes(np.sin(3 * X[:, 0]) + X[:, 1] ** 2)
    low = fit_gp(X, z, "matern", "low")
    default = fit_gp(X, z, "rbf", "botorch")
    noise_low, noise_default = float(low.likelihood.noise.detach()), float(default.likelihood.noise.detach())
    assert noise_low < 1e-2 and noise_low < noise_default


def test_warp_keeps_order_and_tames_an_outlier():
    y = np.array([1.0, 2.0, 3.0, 2.5, 1.5, -1000.0])  # to maximise: a diverged run at -1000
    z = warp_outcomes(y)
    assert list(np.argsort(z)) == list(np.argsort(y))
    plain = warp_outcomes(y, warp=False)
    # without the warp the five ordinary values are squeezed together by the outlier
    assert np.ptp(z[:5]) > 3 * np.ptp(plain[:5])


def test_kriging_believer_keeps_the_mean_and_removes_the_variance_at_pending_points():
    rng = np.random.default_rng(2)
    X = rng.random((20, 2))
    z = warp_outcomes(np.sin(3 * X[:, 0]) + X[:, 1] ** 2)
    model = fit_gp(X, z, maxiter=30)
    pending = rng.random((3, 2))
    Xq = torch.as_tensor(np.vstack([pending, rng.random((30, 2))]))
    with torch.no_grad():
        mean, std = FastPosterior(model)(Xq)
        kb_mean, kb_std = FastPosterior(model, pending)(Xq)
        ei = fast_log_ei(model, float(z.max()))(Xq.unsqueeze(1))
        kb_ei = fast_log_ei(model, float(z.max()), pending, fantasies=0)(Xq.unsqueeze(1))
    np.testing.assert_allclose(kb_mean.numpy(), mean.numpy(), atol=1e-6)
    assert np.all(kb_std.numpy() <= std.numpy() + 1e-9)
    assert np.all(kb_std.numpy()[:3] < 0.01) and np.all(std.numpy()[:3] > 0.05)
    # a running point has (next to) nothing more to offer; points far from it keep their EI
    assert np.all(kb_ei.numpy()[:3] < ei.numpy()[:3] - 3)
    assert np.all(kb_ei.numpy() <= ei.numpy() + 1e-9)


def test_ei_over_fantasised_pending_outcomes_matches_botorch_q_log_ei():
    """E[max(f(x) - max(best, f(P)), 0)] by joint draws of f(P), analytic in x: the value
    BoTorch's qLogExpectedImprovement with X_pending estimates by Monte Carlo."""
    from botorch.acquisition import qLogExpectedImprovement
    from botorch.sampling import SobolQMCNormalSampler

    rng = np.random.default_rng(3)
    X = rng.random((15, 2))
    z = warp_outcomes(np.sin(3 * X[:, 0]) + X[:, 1] ** 2)
    model = fit_gp(X, z, maxiter=30)
    best = float(z.max())
    pending = X[np.argsort(-z)[:1]] + 0.05  # next to the incumbent: where it matters
    Xq = torch.as_tensor(rng.random((200, 2)))
    torch.manual_seed(0)
    with torch.no_grad():
        ours = fast_log_ei(model, best, pending, fantasies=512)(Xq.unsqueeze(1)).numpy()
        ref = qLogExpectedImprovement(model, best_f=best, X_pending=torch.as_tensor(pending),
                                      sampler=SobolQMCNormalSampler(torch.Size([4096]), seed=0))(Xq.unsqueeze(1)).numpy()
        plain = fast_log_ei(model, best)(Xq.unsqueeze(1)).numpy()
        # qLogEI scores the batch {x} + P; its gain over P alone is what x adds
        alone = qLogExpectedImprovement(model, best_f=best, sampler=SobolQMCNormalSampler(torch.Size([4096]), seed=0))(
            torch.as_tensor(pending).unsqueeze(0)).numpy()
    gain = np.exp(ref) - np.exp(alone)
    top = np.argsort(-gain)[:40]  # where an optimiser looks
    assert gain[top].min() > 0
    np.testing.assert_allclose(np.exp(ours[top]), gain[top], rtol=0.1, atol=2e-3 * gain.max())
    assert np.corrcoef(np.exp(ours[top]), gain[top])[0, 1] > 0.95
    # a pending point can only take improvement away (up to the draws' noise)
    assert np.all(np.exp(ours) <= np.exp(plain) * 1.15 + 1e-6)


def test_a_batch_asked_at_once_spreads_out():
    """Sequential greedy with a Kriging believer: q points asked together are not q copies
    of the best point."""
    from llmhpo.objectives.functions import get_function
    from llmhpo.optimizers import make_optimizer

    f = get_function("branin")
    opt = make_optimizer("bo", 2, np.random.default_rng(0), 40)
    for c in opt.ask(10):
        opt.tell(c, f(f.from_unit(c.x)))
    batch = np.array([c.x for c in opt.ask(6)])
    gaps = np.sqrt(((batch[:, None] - batch[None]) ** 2).sum(-1))[np.triu_indices(6, 1)]
    assert gaps.min() > 0.01, gaps


def test_refit_due_when_the_data_grew_by_a_fifth_or_shrank():
    from llmhpo.optimizers._gp import refit_due

    assert refit_due(10, 0, fitted=False)  # never fitted
    assert [n for n in range(10, 20) if refit_due(n, 10)] == [12, 13, 14, 15, 16, 17, 18, 19]
    assert not refit_due(11, 10)
    assert refit_due(9, 10)  # fewer rows than at the fit: another data set
    assert [n for n in range(16, 24) if refit_due(n, 16)] == [19, 20, 21, 22, 23]
    assert refit_due(2, 1)  # one observation more is a fifth of few


@pytest.mark.parametrize("kind", ["lognormal", "negated", "outlier", "uniform4", "constant", "three"])
def test_unwarp_maps_warped_values_back_to_the_standardised_scale(kind):
    from llmhpo.optimizers._gp import fit_warp, standardise

    rng = np.random.default_rng(0)
    y = {"lognormal": rng.lognormal(0, 1.5, 30), "negated": -rng.lognormal(0, 1.5, 30),
         "outlier": np.r_[rng.normal(size=20), 50.0], "uniform4": rng.uniform(size=30) ** 4,
         "constant": np.full(6, 2.0), "three": np.array([1.0, 2.0, 4.0])}[kind]
    z, warp = fit_warp(y)
    np.testing.assert_allclose(z, warp_outcomes(y))
    back = warp.unwarp(torch.as_tensor(z, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(back, standardise(y)[0], atol=1e-9)
    # monotone past the data too (posterior samples beyond the observed values), and finite
    w = torch.linspace(float(z.min()) - 5, float(z.max()) + 5, 201, dtype=torch.float64)
    u = warp.unwarp(w)
    assert torch.isfinite(u).all() and (u[1:] >= u[:-1]).all()
