"""Optuna's samplers (TPE, CMA-ES, GP) behind llmhpo's ask/tell protocol, so that they run
side by side with the report's optimisers on the same space, budget and seeds.

Each wrapper drives a private in-memory Optuna study over d uniform variables x0..x{d-1}
in [0, 1] through Optuna's own ask/tell. Its state is the list of those trials (values,
Optuna's system attributes such as CMA-ES's generation state) and the number of asks:
the sampler is re-created at every ask with a seed drawn from (seed, ask number), which
makes the sequence reproducible and the state plain JSON.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from llmhpo import _json
from llmhpo.optimizers.base import Optimizer

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _OptunaOptimizer(Optimizer):
    uses_observations = True
    _state_attrs = ("trials", "seed_base", "n_asks")

    def __init__(self, dim, rng=None, budget=None, **sampler_options):
        super().__init__(dim, rng, budget)
        self.sampler_options = sampler_options
        self.seed_base = self._seed()
        self.n_asks = 0
        #: one entry per Optuna trial: {"x", "value", "state", "system_attrs"}
        self.trials: list[dict] = []
        self._dists = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(dim)}
        self._study = self._new_study()

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _new_study(self) -> optuna.Study:
        return optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))

    def _after_load(self):
        self._dists = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(self.dim)}
        self._study = self._new_study()
        for t in self.trials:
            state = TrialState[t["state"]]
            self._study.add_trial(
                optuna.trial.create_trial(
                    state=state, value=t["value"] if state == TrialState.COMPLETE else None,
                    params={f"x{i}": float(v) for i, v in enumerate(t["x"])}, distributions=self._dists,
                    system_attrs=_json.decode(t["system_attrs"]),
                )
            )

    def _ask(self, n):
        out = []
        for _ in range(n):
            seed = int(np.random.SeedSequence([self.seed_base, self.n_asks]).generate_state(1)[0] % (2**31 - 1))
            self.n_asks += 1
            self._study.sampler = self._make_sampler(seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = self._study.ask(self._dists)
            x = np.array([trial.params[f"x{i}"] for i in range(self.dim)])
            # samplers keep their state in the new trial's system attributes (CMA-ES: its generation)
            self.trials.append({"x": x, "value": None, "state": "RUNNING",
                                "system_attrs": _json.encode(self._frozen(trial.number).system_attrs)})
            out.append((x, {"optuna_trial": trial.number}))
        return out

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        storage = self._study._storage
        return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(self._study._study_id, number))

    def _finish(self, number: int, value: float | None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if value is None:
                self._study.tell(number, state=TrialState.FAIL)
            else:
                self._study.tell(number, value)
        frozen = self._frozen(number)
        self.trials[number].update(value=value, state="COMPLETE" if value is not None else "FAIL",
                                   system_attrs=_json.encode(frozen.system_attrs))

    def _tell(self, candidate, value):
        self._finish(candidate.info["optuna_trial"], value)

    def _observe(self, candidate, value):
        if value is None:
            return
        params = {f"x{i}": float(v) for i, v in enumerate(candidate.x)}
        self._study.add_trial(optuna.trial.create_trial(value=value, params=params, distributions=self._dists))
        self.trials.append({"x": candidate.x.copy(), "value": value, "state": "COMPLETE", "system_attrs": {}})


class OptunaTPE(_OptunaOptimizer):
    """Optuna's TPESampler (multivariate, 10 startup trials unless set)."""

    name = "optuna_tpe"

    def _make_sampler(self, seed):
        opts = {"multivariate": True, "n_startup_trials": 10, **self.sampler_options}
        return optuna.samplers.TPESampler(seed=seed, **opts)


class OptunaCMAES(_OptunaOptimizer):
    """Optuna's CmaEsSampler (needs the ``cmaes`` package)."""

    name = "optuna_cmaes"

    def _make_sampler(self, seed):
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **self.sampler_options)


class OptunaGP(_OptunaOptimizer):
    """Optuna's GPSampler (10 startup trials unless set)."""

    name = "optuna_gp"

    def _make_sampler(self, seed):
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, **self.sampler_options)
