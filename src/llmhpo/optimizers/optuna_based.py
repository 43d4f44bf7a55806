"""Optuna's samplers (TPE, CMA-ES, GP, NSGA-II) behind llmhpo's ask/tell protocol, so that they run
side by side with the report's optimisers on the same space, budget and seeds.

Each wrapper drives a private in-memory Optuna study over d uniform variables x0..x{d-1}
in [0, 1] through Optuna's own ask/tell. Its state is the list of those trials (values,
Optuna's system attributes such as CMA-ES's generation state) and the number of asks:
the sampler is re-created at every ask with a seed drawn from (seed, ask number), which
makes the sequence reproducible and the state plain JSON.

Failures and moved points: Optuna's samplers leave failed trials out of their models, so
they propose the same failing region again and again. Here a failed trial is told as
complete with the worst value seen so far (a penalty: the sampler learns to avoid the
region), and a point that the base class moved (snapped to an integer, or replaced because
its configuration was known) is told as what was evaluated: the asked trial is failed and a
complete trial at the evaluated point is added. The base class never hands out a known
configuration twice.

Several objectives (TPE, GP, NSGA-II): the private study has one minimised direction per
objective and each trial the list of values. Constraints: each told trial carries its
constraint values as Optuna's ``constraints`` system attribute, which these samplers read
(a failed trial gets the worst values seen, beside its penalty); CMA-ES, which reads none,
is told an infeasible result as a failure (the base class).

Priors: the sampler's start-up trials (``n_startup_trials``; NSGA-II's first generation,
``population_size``), which it draws at random, are drawn from the priors instead and
enqueued (Optuna's ``enqueue_trial``); the model-based trials after them do not use the priors.

The options of a wrapper are the keyword arguments of its sampler's constructor, less
``seed`` (llmhpo sets it): ``check_values`` checks them against that signature, their
simple types against its annotations, and builds the sampler once, before anything runs.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import TrialState

from llmhpo import _json
from llmhpo.optimizers.base import Optimizer

optuna.logging.set_verbosity(optuna.logging.WARNING)


#: annotation -> the Python types a value may have (bool is never taken for a number)
_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
    "dict": (dict,), "list": (list,), "None": (type(None),),
}


def _type_problem(annotation: Any, value: Any) -> str | None:
    """Why ``value`` does not fit a string annotation such as ``'int | None'`` (None if it
    does, or if the annotation names something other than the simple types)."""
    if not isinstance(annotation, str):
        return None
    alternatives = [a.strip().split("[", 1)[0] for a in annotation.split("|")]
    if not all(a in _SIMPLE_TYPES for a in alternatives):
        return None  # a callable, a sampler, ...: not checked here
    for a in alternatives:
        if isinstance(value, _SIMPLE_TYPES[a]) and not (isinstance(value, bool) and a in ("int", "float")):
            return None
    return f"must be {' or '.join(a for a in alternatives if a != 'None')}, got {value!r}"


class _OptunaOptimizer(Optimizer):
    _state_attrs = ("trials", "seed_base", "n_asks", "study_attrs")
    #: whether its sampler is a model of the scores that can be refitted to other data (not CMA-ES,
    #: whose state is its own evolution)
    model_based: ClassVar[bool] = True
    #: the sampler's class name in optuna.samplers
    sampler: ClassVar[str] = ""
    #: llmhpo's own defaults for some sampler arguments; options override them
    sampler_defaults: ClassVar[dict[str, Any]] = {}
    #: the sampler option that counts its random start-up trials (drawn from the priors if any)
    startup_option: ClassVar[str] = "n_startup_trials"

    def __init__(self, dim, rng=None, budget=None, **sampler_options):
        super().__init__(dim, rng, budget)
        unknown = sorted(set(sampler_options) - set(self.options()))
        if unknown:
            raise TypeError(f"{self.name} has no option {unknown[0]!r}; its options are: {', '.join(self.options())}")
        self.sampler_options = sampler_options
        self.seed_base = self._seed()
        self.n_asks = 0
        #: one entry per Optuna trial: {"x", "value", "state", "system_attrs"}
        self.trials: list[dict] = []
        #: the private study's system attributes (NSGA-II caches each generation's parents there)
        self.study_attrs: dict[str, Any] = {}
        self._dists = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(dim)}
        self._study = self._new_study()

    # ------------------------------------------------------------- options
    @classmethod
    def _sampler_class(cls) -> type[optuna.samplers.BaseSampler]:
        return getattr(optuna.samplers, cls.sampler)

    @classmethod
    def _sampler_params(cls) -> dict[str, inspect.Parameter]:
        params = inspect.signature(cls._sampler_class().__init__).parameters
        return {k: p for k, p in params.items()
                if k not in ("self", "seed") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @classmethod
    def options(cls) -> dict[str, Any]:
        """The sampler's keyword arguments less ``seed``, with llmhpo's defaults."""
        return {k: cls.sampler_defaults.get(k, p.default) for k, p in cls._sampler_params().items()}

    @classmethod
    def check_values(cls, options: Mapping[str, Any]) -> None:
        params = cls._sampler_params()
        for key, value in options.items():
            problem = _type_problem(params[key].annotation, value)
            if problem:
                raise TypeError(f"{key} {problem}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental / deprecated arguments: warned at run time
            cls._sampler_class()(seed=0, **{**cls.sampler_defaults, **options})

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return self._sampler_class()(seed=seed, **{**self.sampler_defaults, **self.sampler_options})

    def _new_study(self) -> optuna.Study:
        return optuna.create_study(directions=["minimize"] * self.n_objectives,
                                   sampler=optuna.samplers.RandomSampler(seed=0))

    def _after_load(self):
        self._dists = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(self.dim)}
        self._study = self._new_study()
        for k, v in _json.decode(self.study_attrs).items():
            self._study._storage.set_study_system_attr(self._study._study_id, k, v)
        for t in self.trials:
            state = TrialState[t["state"]]
            self._study.add_trial(
                optuna.trial.create_trial(
                    state=state, values=_listed(t["value"]) if state == TrialState.COMPLETE else None,
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
                if self.prior is not None and self.n_asks <= self._n_startup():
                    u = np.random.default_rng(seed).random(self.dim)
                    self._study.enqueue_trial({f"x{i}": float(v) for i, v in enumerate(self.from_prior(u))})
                trial = self._study.ask(self._dists)
            x = np.array([trial.params[f"x{i}"] for i in range(self.dim)])
            # samplers keep their state in the new trial's system attributes (CMA-ES: its generation)
            self.trials.append({"x": x, "value": None, "state": "RUNNING",
                                "system_attrs": _json.encode(self._frozen(trial.number).system_attrs)})
            out.append((x, {"optuna_trial": trial.number}))
        self.study_attrs = _json.encode(self._study._storage.get_study_system_attrs(self._study._study_id))
        return out

    def _n_startup(self) -> int:
        """The sampler's random start-up trials (0 if it has no such option)."""
        value = {**self.options(), **self.sampler_options}.get(self.startup_option)
        return int(value) if isinstance(value, int) else 0

    def suggest(self, X, y, pending):
        if not self.model_based or len(y) < 2:
            return None
        study = self._new_study()  # a throw-away study with the other fidelity's scores
        for x, v in zip(X, y):
            study.add_trial(optuna.trial.create_trial(
                values=_listed(v), params={f"x{i}": float(u) for i, u in enumerate(x)}, distributions=self._dists))
        study.sampler = self._make_sampler(self._seed())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask(self._dists)
        return np.array([trial.params[f"x{i}"] for i in range(self.dim)])

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        storage = self._study._storage
        return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(self._study._study_id, number))

    def _finish(self, number: int, value, constraints: list[float] | None = None) -> None:
        if constraints is not None:  # read by the samplers as trial.constraints
            storage = self._study._storage
            trial_id = storage.get_trial_id_from_study_id_trial_number(self._study._study_id, number)
            storage.set_trial_system_attr(trial_id, _CONSTRAINTS_KEY, list(constraints))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if value is None:
                self._study.tell(number, state=TrialState.FAIL)
            else:
                self._study.tell(number, value)
        frozen = self._frozen(number)
        self.trials[number].update(value=value, state="COMPLETE" if value is not None else "FAIL",
                                   system_attrs=_json.encode(frozen.system_attrs))
        self.study_attrs = _json.encode(self._study._storage.get_study_system_attrs(self._study._study_id))

    def _penalty(self):
        """The worst value of a completed trial, per objective (None before any)."""
        done = [t["value"] for t in self.trials if t["state"] == "COMPLETE" and t["value"] is not None]
        if not done:
            return None
        worst = np.max(np.asarray(done, dtype=float).reshape(len(done), -1), axis=0)
        return float(worst[0]) if self.n_objectives == 1 else [float(v) for v in worst]

    def _worst_constraints(self) -> list[float] | None:
        """The worst constraint values told so far (None before any)."""
        seen = [c for t in self.trials if (c := (t.get("system_attrs") or {}).get(_CONSTRAINTS_KEY))]
        if not seen or len({len(c) for c in seen}) != 1:
            return None
        return [float(v) for v in np.max(np.asarray(seen, dtype=float), axis=0)]

    def _tell(self, candidate, value):
        number = candidate.info["optuna_trial"]
        constraints = self.constraints
        if value is None:
            value, constraints = self._penalty(), self._worst_constraints()
        if np.max(np.abs(np.asarray(self.trials[number]["x"]) - candidate.x)) > 1e-12:
            self._finish(number, None)  # the asked point was not evaluated: the evaluated one is added
            self._add(candidate, value, constraints)
        else:
            self._finish(number, value, constraints)

    def _observe(self, candidate, value):
        constraints = self.constraints
        if value is None:
            value, constraints = self._penalty(), self._worst_constraints()
        self._add(candidate, value, constraints)

    def _add(self, candidate, value, constraints: list[float] | None) -> None:
        """A complete trial at the candidate's point, not asked of the sampler."""
        if value is None:
            return
        params = {f"x{i}": float(v) for i, v in enumerate(candidate.x)}
        attrs = {} if constraints is None else {_CONSTRAINTS_KEY: list(constraints)}
        self._study.add_trial(optuna.trial.create_trial(values=_listed(value), params=params,
                                                        distributions=self._dists, system_attrs=attrs))
        self.trials.append({"x": candidate.x.copy(), "value": value, "state": "COMPLETE", "system_attrs": attrs})


def _listed(value) -> list[float]:
    """A told value (a number, or one per objective) as Optuna's list of values."""
    return [float(v) for v in value] if isinstance(value, (list, tuple, np.ndarray)) else [float(value)]


class OptunaTPE(_OptunaOptimizer):
    """Optuna's TPESampler (multivariate, 10 startup trials unless set)."""

    name = "optuna_tpe"
    multi_objective = handles_constraints = True
    sampler = "TPESampler"
    sampler_defaults = {"multivariate": True, "n_startup_trials": 10}


class OptunaCMAES(_OptunaOptimizer):
    """Optuna's CmaEsSampler (needs the ``cmaes`` package)."""

    name = "optuna_cmaes"
    model_based = False
    sampler = "CmaEsSampler"
    sampler_defaults = {"warn_independent_sampling": False}


class OptunaGP(_OptunaOptimizer):
    """Optuna's GPSampler (10 startup trials unless set)."""

    name = "optuna_gp"
    multi_objective = handles_constraints = True
    sampler = "GPSampler"
    sampler_defaults = {"warn_independent_sampling": False}


class OptunaNSGAII(_OptunaOptimizer):
    """Optuna's NSGAIISampler (Deb et al. 2002; generations of ``population_size``, 50 unless set)."""

    name = "optuna_nsga2"
    model_based = False
    multi_objective = handles_constraints = True
    sampler = "NSGAIISampler"
    startup_option = "population_size"
