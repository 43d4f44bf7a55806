"""Bayesian optimisation: a GP surrogate with log expected improvement.

As in the report (3.4): an initial Latin-hypercube design of ``n_init`` points (10), then a
BoTorch ``SingleTaskGP`` and ``LogExpectedImprovement`` (Ament et al. 2023). What makes it
refine, and not only explore (``_gp.py`` for the model):

- model: Matérn-5/2 ARD with the dimension-scaled lengthscale prior, a noise floor of 1e-6
  under a weak prior (a deterministic objective is interpolated, a noisy one learns its
  noise), outcomes warped by a fitted Yeo-Johnson transform (outliers such as a diverged
  run); hyperparameters warm-started from the previous fit;
- incumbent: ``best_f`` is the best posterior mean at an evaluated point (the plug-in EI of
  noisy BO; with an interpolating model it is the best value);
- acquisition optimisation: ``raw_samples`` scrambled Sobol points plus Gaussian steps of
  several sizes (0.001 to 0.2) around the five best evaluated points; the best of each set
  start ``num_restarts`` L-BFGS-B runs (BoTorch ``optimize_acqf``); the best optimum whose
  configuration is new is proposed (integers and categoricals are snapped before that
  check, see ``Optimizer.snap``);
- batches: ``ask(q)`` and still-running trials: sequential greedy, each point maximising the
  expected improvement over the running and already chosen points' outcomes, averaged over
  16 joint draws of those outcomes from the GP (``_gp.fast_log_ei``): the quantity
  ``qLogExpectedImprovement`` with ``X_pending`` estimates by Monte Carlo, analytic in the
  new point, so an ask of q points costs about q single-point asks (the Monte-Carlo version
  cost 4-5 times that, and kept eight workers waiting on one-second trials; a Kriging
  believer, cheaper, crowded batches around the incumbent: docs/benchmarks.md);
- failures: a failed point enters the GP with the worst warped value observed, so the region
  around it loses its expected improvement; the base class never hands it out again;
- several objectives: one GP per objective (each warped as above) and BoTorch's
  ``qLogNoisyExpectedHypervolumeImprovement`` (Daulton et al. 2021; the log form of Ament et
  al. 2023). The hypervolume is measured on each objective's own standardised scale: the
  posterior samples are unwarped first (``Warp.unwarp``), since a warp keeps dominance but
  reshapes the front and so which improvements count (measured: docs/benchmarks.md, DTLZ2
  and ZDT1 gained most). The reference point is a tenth of each objective's observed range
  below its worst value on that scale; the running and already chosen points are
  ``X_pending``; maximised as above from at most 512 raw points; each objective's
  hyperparameters refitted as above;
- constraints (``_feasible.py``): one GP per constraint value, and the acquisition weighted
  by the probability that every constraint holds (Gardner et al. 2014): log EI plus the
  log probability of feasibility, the incumbent the best feasible point (before any, the
  probability of feasibility alone); with several objectives, qLogNEHVI's own
  ``constraints`` on the constraint GPs' samples (Daulton et al. 2021, sec. 4). An
  infeasible trial is data for the objective and the constraint models, not a failure;
- earlier studies (``set_earlier``, ``[warm_start] from`` with use = "data"): each study's values
  are standardised on their own (z-scores), and once this study has ``_OWN_MIN`` results
  they are mapped to its scale (its mean and standard deviation) and join its data; before
  that the GP sees the earlier studies alone. The incumbent is this study's best, so the
  earlier studies' best regions keep their expected improvement until tried here. The
  initial design shrinks to ``n_init // 2`` points (at least 1; with use = "design", by the
  configurations evaluated first), and from ``n_init`` own
  results on the GP sees this study's alone: kept longer, an earlier study whose optimum
  lies elsewhere held the search away from this one's (docs/benchmarks.md).
- priors (``llmhpo.priors``): two thirds of the initial design and the random points go
  through the priors' inverse CDF (the design's first third stays uniform), and the
  acquisition is weighted by the prior with a weight that fades as data come in (piBO,
  Hvarfner et al. 2022, eq. 4: a(x) pi(x)^(beta / n), n the observations so far): log
  acquisition plus (beta / n) log pi_e(x), for one objective and several alike, where pi_e =
  (1 - e) pi + e mixes in the uniform density (``prior_floor`` e = 0.1): a confident, wrong
  prior without that floor kept every proposal of the recorded LoRA benchmark in its dead
  region for 40 evaluations (docs/benchmarks.md); with it the penalty is at most
  (beta / n) log(1 / e) and the model overrules it as n grows. The prior that weighs (and
  draws the design) is the one the results support (``active_prior``): a variable's prior is
  set aside once its region has been tried (two results where it is denser than the uniform)
  while the best results are less likely under it than under the uniform (the likelihood
  test PriorBand, Mallik et al. 2023, weighs a prior by), and no prior weighs
  while every result ties once the prior's region has been tried (a flat start says nothing
  for it).

torch, BoTorch and scipy.stats are imported where they are used, not at import time.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from llmhpo.optimizers._fidelity_gp import RungsGP, at_top, at_top_acqf
from llmhpo.optimizers._gp import (dtype, fast_log_ei, fit_gp, fit_warp, hyperparameters, loading, preload,
                                   prior_weighted, refit_due, seeded_torch, standardise, warp_outcomes)
from llmhpo.optimizers.base import Optimizer

#: best evaluated points that seed local starts, and the step sizes around them
_N_TOP = 5
_LOCAL_SD = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2)
#: raw samples of qLogNEHVI at most: each costs a hypervolume improvement over 64 joint draws
#: (BoTorch's tutorials use 512)
_MO_RAW = 512
#: own results before earlier studies' z-scores are mapped to this study's scale
_OWN_MIN = 3


class BayesianOptimization(Optimizer):
    name = "bo"
    multi_objective = True
    handles_constraints = True
    takes_earlier = True
    _state_attrs = ("design", "n_design_asked", "hyper", "hyper_n", "cons", "hyper_each", "hyper_each_n")

    def __init__(self, dim, rng=None, budget=None, n_init: int = 10, num_restarts: int = 10,
                 raw_samples: int = 1024, kernel: str = "matern", noise: str = "low", warp: bool = True,
                 local_starts: bool = True, failures: str = "impute", fit_maxiter: int = 50,
                 prior_beta: float = 10.0, prior_floor: float = 0.1):
        super().__init__(dim, rng, budget)
        self.check_values({"n_init": n_init, "num_restarts": num_restarts, "raw_samples": raw_samples,
                           "kernel": kernel, "noise": noise, "failures": failures, "prior_beta": prior_beta,
                           "prior_floor": prior_floor})
        self.n_init, self.num_restarts, self.raw_samples = n_init, num_restarts, raw_samples
        self.kernel, self.noise, self.warp, self.local_starts = kernel, noise, bool(warp), bool(local_starts)
        self.failures, self.fit_maxiter = failures, fit_maxiter
        #: piBO's beta: the prior's weight is beta / n after n observations (10 as in the paper)
        self.prior_beta = float(prior_beta)
        #: the share of the uniform density mixed into the prior's weight, so that a misleading
        #: prior's penalty is bounded (log prior_floor) while a good one keeps its lift
        self.prior_floor = float(prior_floor)
        from scipy.stats import qmc

        self.design = qmc.LatinHypercube(d=dim, seed=self._seed()).random(n_init)
        self.n_design_asked = 0
        #: the last fit's raw hyperparameters (warm start of the next fit)
        self.hyper: dict[str, Any] = {}
        #: the number of observations at the last hyperparameter fit
        self.hyper_n = 0
        #: the constraint values told with each result (None: a failure, or none told)
        self.cons: list[list[float] | None] = []
        #: several objectives: each objective's GP hyperparameters and the observations at their fit
        self.hyper_each: list[dict[str, Any]] = []
        self.hyper_each_n = 0
        #: earlier studies' (X (n, d), z (n,) z-scores), not part of the state (``set_earlier``)
        self.earlier: list[tuple[np.ndarray, np.ndarray]] = []

    def set_earlier(self, groups, designed=0):
        self.earlier = []
        for X, y in groups:
            z = standardise(y)[0]
            self.earlier.append((np.asarray(X, dtype=float).reshape(len(z), self.dim), z))
        n = max(0, self.n_init - designed) if designed else max(1, self.n_init // 2) if self.earlier else self.n_init
        if n != self.n_init and self.n_design_asked == 0 and len(self.design) == self.n_init:
            from scipy.stats import qmc

            # a smaller initial design: the earlier studies cover part of the space already
            self.design = qmc.LatinHypercube(d=self.dim, seed=self._seed()).random(n) if n else self.design[:0]

    def _data(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(X (n, d), y (n,), n_own): this study's successes (the first n_own rows) and the
        earlier studies' observations mapped to its scale (see the module docstring)."""
        X, y = self._observed()
        if not self.earlier or self.n_objectives > 1 or self._cons_told() \
                or len(y) >= self.n_init:
            return X, y, len(y)
        Xp = np.vstack([p[0] for p in self.earlier])
        zp = np.concatenate([p[1] for p in self.earlier])
        if len(y) < _OWN_MIN:
            return Xp, zp, 0
        _, mean, sd = standardise(y)
        return np.vstack([X, Xp]), np.concatenate([y, mean + sd * zp]), len(y)

    def _cons_told(self) -> bool:
        """Whether any result came with constraint values."""
        return any(c is not None for c in self.cons)

    @classmethod
    def check_values(cls, options):  # its own: its constructor draws a design (scipy.stats)
        if options.get("n_init", 1) < 1:
            raise ValueError(f"n_init must be >= 1, got {options['n_init']}")
        if options.get("num_restarts", 1) < 1 or options.get("raw_samples", 1) < 1:
            raise ValueError(f"num_restarts and raw_samples must be >= 1, got {options.get('num_restarts', 10)}, "
                             f"{options.get('raw_samples', 1024)}")
        allowed = {"kernel": ("matern", "rbf"), "noise": ("low", "botorch"), "failures": ("impute", "ignore")}
        for key, values in allowed.items():
            if key in options and options[key] not in values:
                raise ValueError(f"{key} must be one of {', '.join(map(repr, values))}, got {options[key]!r}")
        beta = options.get("prior_beta", 10.0)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise ValueError(f"prior_beta must be a number >= 0 (0: the prior only shapes the initial design), "
                             f"got {beta!r}")
        floor = options.get("prior_floor", 0.1)
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < 1:
            raise ValueError(f"prior_floor must be a number in [0, 1), got {floor!r}")

    # ------------------------------------------------------------------ ask
    def _ask(self, n):
        out = []
        # the design draws from the prior while the results so far support it (``active_prior``)
        prior = self.active_prior(*self._observed()) if self.n_design_asked < len(self.design) else None
        while len(out) < n and self.n_design_asked < len(self.design):
            x = self.design[self.n_design_asked].copy()
            # the design's first third stays uniform: a misleading prior cannot hide the rest of
            # the space from the first model, and the prior's points are judged against those
            # values from the start (with a prior_floor of 0, the prior draws them all)
            if prior is not None and not (self.prior_floor > 0 and self.n_design_asked < len(self.design) // 3):
                x = prior.from_uniform(x[None, :])[0]
            out.append((x, {"phase": "initial"}))
            self.n_design_asked += 1
        # the model's libraries load in the background while the initial design runs (after
        # its first points are out: imports hold the interpreter's lock)
        preload()
        if len(out) == n:
            return out
        X, y, n_own = self._data()
        if len(y) < 2:
            # nothing to model yet: wait for the initial design unless it all failed
            if self.pending or out:
                return out
            return out + self._random(n - len(out))
        if self.pending and loading() and len(y) < 2 * self.n_init:
            # the first seconds of a parallel study of short trials: the model's libraries are
            # still loading, so free workers get random points rather than a wait
            return out + self._random(n - len(out))
        pending = [c.x for c in self.pending.values()] + [x for x, _ in out]
        X_fail = np.asarray([x for x, v in zip(self.X, self.y) if v is None]).reshape(-1, self.dim)
        C = self._constraint_values()
        if self.n_objectives > 1:
            pts = self._acquire_pareto(X, y, X_fail, n - len(out), pending, C)
        else:
            pts = self._acquire(X, y, X_fail, n - len(out), pending, own=True, C=C, n_own=n_own)
        return out + [(x, {"phase": "model"}) for x in pts]

    def _random(self, k: int) -> list:
        """k points drawn from the priors the results support (uniform without), for when
        there is no model yet."""
        prior = self.active_prior(*self._observed())
        U = [self.rng.random(self.dim) for _ in range(k)]
        return [(u if prior is None else prior.from_uniform(u[None, :])[0], {"phase": "random"}) for u in U]

    def _constraint_values(self) -> np.ndarray | None:
        """(n, k) constraint values of the successful observations (rows in ``_observed``
        order; NaN where none were told); None when no result had constraints."""
        told = [None] * (len(self.X) - len(self.cons)) + list(self.cons)  # a state saved before they were kept
        rows = [c for c, v in zip(told, self.y) if v is not None]
        k = max((len(c) for c in rows if c is not None), default=0)
        if not k:
            return None
        return np.asarray([c if c is not None and len(c) == k else [np.nan] * k for c in rows], dtype=float)

    def _constraint_models(self, X: np.ndarray, C: np.ndarray | None):
        """One GP per constraint on the points that told them; None without constraints."""
        from llmhpo.optimizers._feasible import fit_constraints

        if C is None:
            return None
        told = ~np.isnan(C).any(axis=1)
        if told.sum() < 2:
            return None
        return fit_constraints(X[told], C[told], self.kernel, self.noise, self.fit_maxiter)

    def suggest(self, X, y, pending):
        if len(y) < 2:
            return None
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        return self._acquire(X, y, np.empty((0, self.dim)), 1, list(pending), own=False)[0]

    def _fit(self, X, y, X_fail, own: bool):
        """The GP on warped values to maximise, failures imputed as the worst value."""
        z = warp_outcomes(-y, self.warp)
        if len(X_fail) and self.failures == "impute":
            X, z = np.vstack([X, X_fail]), np.concatenate([z, np.full(len(X_fail), z.min())])
        if own and not refit_due(len(z), self.hyper_n, bool(self.hyper)):
            return fit_gp(X, z, self.kernel, self.noise, warm=self.hyper, maxiter=0)
        model = fit_gp(X, z, self.kernel, self.noise, warm=self.hyper if own else None, maxiter=self.fit_maxiter)
        if own:
            self.hyper, self.hyper_n = hyperparameters(model), len(z)
        return model

    def _acquire(self, X, y, X_fail, q, pending, own: bool, C=None, n_own: int | None = None) -> list[np.ndarray]:
        """q new points by sequential greedy (log) EI, weighted by the probability of
        feasibility under constraints. X: (n, d) successes, y: (n,) their values (minimised),
        X_fail: (m, d) failed points, pending: points still running, C: (n, k) constraint
        values of X (``_constraint_values``), n_own: the first rows that are this study's
        (the rest, earlier studies', are no incumbent; None or 0: every row may be)."""
        import torch

        from llmhpo.optimizers._feasible import feasible_rows, weighted

        seed = self._seed()
        chosen: list[np.ndarray] = []
        with seeded_torch(seed):
            model = self._fit(X, y, X_fail, own)
            cons = self._constraint_models(X, C)
            ok = np.ones(len(X), dtype=bool) if cons is None else feasible_rows(C)
            inc = ok & (np.arange(len(X)) < n_own) if n_own else ok
            if ok.any():
                with torch.no_grad():
                    best_f = float(model.posterior(torch.as_tensor(X[inc], dtype=dtype())).mean.max())
            prior = self.active_prior(X, y)  # judged once per ask, not per point of the batch
            for i in range(q):
                X_pending = [*pending, *chosen]
                acqf = fast_log_ei(model, best_f, X_pending) if ok.any() else None
                if cons is not None:
                    acqf = weighted(acqf, cons)
                acqf = self._prior_weighted(acqf, prior)
                taken = (lambda x, extra=X_pending: self.is_known(x, extra)) if own else \
                    (lambda x, extra=[*X, *X_pending]: _near_any(x, extra, self.same_tol))
                chosen.append(self._maximise(acqf, X, _feasible_first(y, ok), taken, seed + i))
        return chosen

    def _acquire_pareto(self, X, Y, X_fail, q, pending, C=None) -> list[np.ndarray]:
        """q new points by sequential greedy qLogNEHVI (under constraints, with the constraint
        GPs' outputs as its ``constraints``). X: (n, d) successes, Y: (n, m) their values
        (each minimised), X_fail: (k, d) failed points, pending: points still running, C:
        (n, k) constraint values of X (``_constraint_values``)."""
        import torch
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.models import ModelListGP
        from botorch.sampling import SobolQMCNormalSampler

        from llmhpo.optimizers._feasible import feasible_rows, outcome_constraints

        seed = self._seed()
        m = Y.shape[1]
        # each objective's GP models its warped values; the hypervolume is measured on the
        # objectives' own (standardised) scale: the samples are unwarped before it
        fitted = [fit_warp(-Y[:, j], self.warp) for j in range(m)]
        Z = np.column_stack([z for z, _ in fitted])  # maximised
        ok = np.ones(len(Z), dtype=bool) if C is None else feasible_rows(C)
        S = np.column_stack([standardise(-Y[:, j])[0] for j in range(m)])
        Sr = S[ok] if ok.any() else S  # the reference point from the feasible points' values
        ref = Sr.min(axis=0) - 0.1 * np.maximum(Sr.max(axis=0) - Sr.min(axis=0), 1e-9)
        X_ok = X
        if len(X_fail) and self.failures == "impute":
            X, Z = np.vstack([X, X_fail]), np.vstack([Z, np.tile(Z.min(axis=0), (len(X_fail), 1))])
        chosen: list[np.ndarray] = []
        with seeded_torch(seed):
            cons = self._constraint_models(X_ok, C)
            models = self._fit_each(X, Z)
            model = ModelListGP(*models, *([] if cons is None else [c.model for c in cons]))
            extra = {"objective": _Unwarped([w for _, w in fitted])}
            if cons is not None:
                extra["constraints"] = outcome_constraints(m, cons)
            prior = self.active_prior(X, Y)  # judged once per ask, not per point of the batch
            for i in range(q):
                X_pending = [*pending, *chosen]
                acqf = qLogNoisyExpectedHypervolumeImprovement(
                    model, ref_point=ref.tolist(), X_baseline=torch.as_tensor(X, dtype=dtype()),
                    sampler=SobolQMCNormalSampler(torch.Size([64]), seed=seed + i), prune_baseline=True,
                    X_pending=torch.as_tensor(np.asarray(X_pending), dtype=dtype()) if X_pending else None, **extra)
                acqf = self._prior_weighted(acqf, prior)
                # local starts around the feasible points best on the objectives together
                score = _feasible_first(-Z[: len(Y)].sum(axis=1), ok)
                chosen.append(self._maximise(acqf, X[: len(Y)], score,
                                             lambda x, extra=X_pending: self.is_known(x, extra), seed + i,
                                             min(self.raw_samples, _MO_RAW)))
        return chosen

    def prior_weight(self) -> float:
        """piBO's exponent beta / n: the prior's weight in the log acquisition after the n
        results told so far (failures included); 0 without a prior."""
        if self.prior is None:
            return 0.0
        return self.prior_beta / max(1, len(self.X))

    def active_prior(self, X, y):
        """The prior that weighs now (``UnitPrior.supported``: the variables' priors the best
        results so far do not contradict), judged afresh at each ask from the data (nothing of
        it is state to save); None without a prior or when none is supported. With several
        objectives the prior is kept whole: a Pareto set spreads along its front by design, so
        where it lies says little against a prior."""
        y = np.asarray(y, dtype=float)
        if self.prior is None or (y.ndim > 1 and y.shape[1] > 1):
            return self.prior
        return self.prior.supported(X, y, self.prior_floor)

    def _prior_weighted(self, acqf, prior):
        """``acqf`` (a log acquisition) weighted by ``prior`` (``active_prior``) to the power
        ``prior_weight()`` (``prior_weighted``); unchanged without one."""
        w = self.prior_weight()
        return acqf if w == 0 or prior is None else prior_weighted(acqf, prior.log_pdf, w, self.prior_floor)

    def _fit_each(self, X, Z) -> list:
        """One GP per objective (columns of Z, maximised); as ``_fit``, the hyperparameters are
        refitted when the data grew by a fifth, else the last ones condition on the data."""
        m = Z.shape[1]
        refit = len(self.hyper_each) != m or refit_due(len(Z), self.hyper_each_n)
        if not refit:
            return [fit_gp(X, Z[:, j], self.kernel, self.noise, warm=self.hyper_each[j], maxiter=0) for j in range(m)]
        warm = self.hyper_each if len(self.hyper_each) == m else [None] * m
        models = [fit_gp(X, Z[:, j], self.kernel, self.noise, warm=warm[j], maxiter=self.fit_maxiter)
                  for j in range(m)]
        self.hyper_each, self.hyper_each_n = [hyperparameters(g) for g in models], len(Z)
        return models

    def _maximise(self, acqf, X, y, taken, seed: int, raw_samples: int | None = None) -> np.ndarray:
        """The best local optimum of acqf whose (snapped) configuration is not ``taken``."""
        import torch
        from botorch.optim import optimize_acqf

        dt = dtype()
        d = self.dim
        raw = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(raw_samples or self.raw_samples, dtype=dt)
        starts = [raw]
        if self.local_starts:
            top = torch.as_tensor(X[np.argsort(y, kind="stable")[:_N_TOP]], dtype=dt)
            sd = torch.as_tensor(_LOCAL_SD, dtype=dt).repeat_interleave(4)
            steps = sd[None, :, None] * torch.randn(len(top), len(sd), d, dtype=dt)
            local = (top[:, None, :] + steps).reshape(-1, d)
            local = 1.0 - (1.0 - local.abs()).abs()  # reflect at the walls
            starts.append(local.clamp(0.0, 1.0))
        with torch.no_grad():
            vals = [torch.nan_to_num(_batched(acqf, s), nan=-torch.inf) for s in starts]
        # half the restarts from the best raw points, half from the best local ones
        n_local = self.num_restarts // 2 if len(starts) > 1 else 0
        n_raw = self.num_restarts - n_local
        ics = [starts[0][vals[0].topk(min(n_raw, len(vals[0]))).indices]]
        if n_local:
            ics.append(starts[1][vals[1].topk(min(n_local, len(vals[1]))).indices])
        ics_t = torch.cat(ics).unsqueeze(1)
        bounds = torch.stack([torch.zeros(d, dtype=dt), torch.ones(d, dtype=dt)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # L-BFGS-B warnings: the restarts are many
            cand, acq = optimize_acqf(acqf, bounds=bounds, q=1, num_restarts=len(ics_t),
                                      batch_initial_conditions=ics_t, return_best_only=False,
                                      options={"maxiter": 200})
        cand, acq = cand.detach().reshape(-1, d), acq.detach().reshape(-1)
        # best first: the optima, then every start point, so an integer space still gets a new point
        pool = [cand[acq.argsort(descending=True)]]
        for s, v in zip(starts, vals):
            pool.append(s[v.argsort(descending=True)])
        for x in torch.cat(pool).numpy():
            x = self.snap_point(x)
            if not taken(x):
                return x
        return self.rng.random(d)  # the base class finds a fresh point near it

    def _tell(self, candidate, value):
        self.cons.append(self.constraints)

    def _observe(self, candidate, value):
        """Warm-start values are in the history already; the GP uses them at the next ask."""
        self.cons.append(self.constraints)

    # ------------------------------------------------------------------ across rungs
    @property
    def rungs_gp(self) -> RungsGP:
        """The GP over (configuration, rung) of ``[fidelity] model = "all_rungs"``, with this
        optimiser's kernel, noise and warping; its hyperparameters are part of the state."""
        if getattr(self, "_rungs_gp", None) is None:
            self._rungs_gp = RungsGP(self.kernel, self.noise, self.warp, self.fit_maxiter)
        return self._rungs_gp

    def suggest_rungs(self, Z, y, X_seen, pending) -> np.ndarray:
        """A new configuration by log EI at the top rung of the GP over every rung's scores.
        Z: (n, d + 1) points (x, s) with s in [0, 1] (``rung_coordinate``), y: (n,) their
        scores (minimised), X_seen: (m, d) the configurations scored (the incumbent is the
        best predicted top-rung score among them), pending: (p, d) configurations running,
        counted at the top rung."""
        gp = self.rungs_gp
        gp.fit(Z, y)
        X_seen = np.asarray(X_seen, dtype=float).reshape(-1, self.dim)
        pred = gp.top_mean(X_seen)
        seed = self._seed()
        with seeded_torch(seed):
            top_pending = list(at_top(np.asarray(pending, dtype=float).reshape(-1, self.dim))) if len(pending) else []
            acqf = at_top_acqf(fast_log_ei(gp.model, float(pred.max()), top_pending), self.dim)
            taken = [*X_seen, *pending]
            return self._maximise(acqf, X_seen, -pred, lambda x: _near_any(x, taken, self.same_tol), seed)

    def state_dict(self):
        state = super().state_dict()
        if getattr(self, "_rungs_gp", None) is not None and self._rungs_gp.hyper:
            state["rungs_gp"] = self._rungs_gp.state_dict()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._rungs_gp = None
        if "rungs_gp" in state:
            self.rungs_gp.load_state_dict(state["rungs_gp"])


def _Unwarped(warps):
    """BoTorch's multi-output objective for qLogNEHVI: posterior samples (..., m [+ k]) of the
    m warped objectives (then any constraints) -> (..., m) on the objectives' standardised
    scale (``Warp.unwarp``)."""
    import torch
    from botorch.acquisition.multi_objective.objective import MCMultiOutputObjective

    class Unwarped(MCMultiOutputObjective):
        def forward(self, samples, X=None):
            return torch.stack([w.unwarp(samples[..., j]) for j, w in enumerate(warps)], dim=-1)

    return Unwarped()


def _batched(acqf, X, chunk: int = 512):
    """acqf on (N, d) points, one at a time (q = 1), in chunks: (N,)."""
    import torch

    return torch.cat([acqf(X[i:i + chunk].unsqueeze(1)) for i in range(0, len(X), chunk)])


def _feasible_first(score: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """score (n,), lower is better, shifted so that every feasible point (ok) comes before
    every infeasible one: where the local starts of the acquisition's optimisation go."""
    return score + np.where(ok, 0.0, float(np.ptp(score)) + 1.0)


def _near_any(x: np.ndarray, pts: list, tol: float) -> bool:
    if not len(pts):
        return False
    return bool(np.min(np.max(np.abs(np.asarray(pts) - x), axis=1)) <= tol)
