"""The optimisers, all behind one protocol (``ask(n)`` / ``tell(candidate, value)``), and
the one table that names them.

``_IMPLEMENTATIONS`` maps each name to the module and class that implement it; a module is
imported only when its optimiser is used (``OPTIMIZERS[name]``), so that importing this
package, listing the names and checking a config stay fast (no torch, no scipy.stats).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from llmhpo.errors import ConfigError, did_you_mean
from llmhpo.optimizers.base import Candidate, Optimizer

_P = "llmhpo.optimizers."

#: name -> (module, class), in the order the names are listed
_IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "random": (_P + "sampling", "RandomSearch"),
    "grid": (_P + "sampling", "GridSearch"),
    "lhs": (_P + "sampling", "LatinHypercube"),
    "sobol": (_P + "sampling", "Sobol"),
    "annealing": (_P + "annealing", "SimulatedAnnealing"),
    "genetic": (_P + "genetic", "GeneticAlgorithm"),
    "local_search": (_P + "local_search", "IteratedLocalSearch"),
    "bo": (_P + "bayesian", "BayesianOptimization"),
    "soo": (_P + "partition.soo", "SOO"),
    "bamsoo": (_P + "partition.bamsoo", "BaMSOO"),
    "direct": (_P + "partition.direct", "DIRECT"),
    "fda": (_P + "partition.fda", "FractalDecomposition"),
    "optuna_tpe": (_P + "optuna_based", "OptunaTPE"),
    "optuna_cmaes": (_P + "optuna_based", "OptunaCMAES"),
    "optuna_gp": (_P + "optuna_based", "OptunaGP"),
    "optuna_nsga2": (_P + "optuna_based", "OptunaNSGAII"),
}

#: the optimisers that take several objectives (their classes say ``multi_objective``)
MULTI_OBJECTIVE: tuple[str, ...] = ("bo", "random", "grid", "lhs", "sobol", "optuna_tpe", "optuna_gp", "optuna_nsga2")


class _Registry(Mapping[str, type[Optimizer]]):
    """Read-only name -> optimiser class. Names, ``in`` and ``len`` need no import;
    ``registry[name]`` imports that one implementation (``values``/``items`` import all)."""

    def __init__(self, table: Mapping[str, tuple[str, str]]):
        self._table = dict(table)
        self._classes: dict[str, type[Optimizer]] = {}

    def __getitem__(self, name: str) -> type[Optimizer]:
        cls = self._classes.get(name)
        if cls is None:
            module, attr = self._table[name]  # KeyError for an unknown name
            cls = getattr(importlib.import_module(module), attr)
            if cls.name != name:
                raise RuntimeError(f"{module}.{attr} is named {cls.name!r}, registered as {name!r}")
            self._classes[name] = cls
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"OPTIMIZERS({', '.join(self._table)})"


OPTIMIZERS: Mapping[str, type[Optimizer]] = _Registry(_IMPLEMENTATIONS)


def optimizer_options(name: str) -> dict[str, Any]:
    """The options an optimiser accepts, with their defaults."""
    return OPTIMIZERS[name].options()


def check_optimizer(name: str, options: dict[str, Any] | None = None) -> None:
    """Raise ConfigError for an unknown optimiser, option or option value, before anything
    runs (a study is created, or an old one replaced by --overwrite). Imports the one
    implementation, which must stay light (``Optimizer.check_values``)."""
    if name not in OPTIMIZERS:
        # Optuna's samplers go by their Optuna names here: "tpe" is "optuna_tpe"
        hint = f" (did you mean 'optuna_{name}'?)" if f"optuna_{name}" in OPTIMIZERS else did_you_mean(name, OPTIMIZERS)
        raise ConfigError(f"unknown optimizer {name!r}{hint}; "
                          f"choose one of: {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    allowed = cls.options()
    for key in options or {}:
        if key not in allowed:
            raise ConfigError(
                f"optimizer '{name}' has no option '{key}'{did_you_mean(key, allowed)}; "
                f"its options are: {', '.join(allowed) or 'none'}"
            )
    try:
        cls.check_types(dict(options or {}))
        cls.check_values(dict(options or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer '{name}': bad options {options}: {e}") from e


def make_optimizer(name: str, dim: int, rng: np.random.Generator, budget: int | None = None,
                   options: dict[str, Any] | None = None,
                   snap: Callable[[np.ndarray], np.ndarray] | None = None, n_objectives: int = 1,
                   prior=None) -> Optimizer:
    """An optimiser by name, told ``n_objectives`` values per result. snap: (d,) point of [0, 1]^d -> (d,) point of the configuration
    really evaluated (``SearchSpace.snap``); every proposed point goes through it before the
    duplicate check, so the model sees evaluated points and no configuration comes twice.
    prior: the variables' priors on [0, 1]^d (``llmhpo.priors.UnitPrior``, None: none), used
    where the optimiser's algorithm allows (docs/configuration.md, "Priors")."""
    check_optimizer(name, options)
    try:
        opt = OPTIMIZERS[name](dim, rng, budget, **(options or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer '{name}': bad options {options}: {e}") from e
    opt.snap = snap
    if prior is not None and prior.dim != dim:
        raise ValueError(f"a prior over {prior.dim} dimensions given to an optimiser of {dim}")
    opt.prior = prior
    if n_objectives > 1:
        try:
            opt.set_objectives(n_objectives)
        except ValueError as e:
            raise ConfigError(f"{e}; with several objectives use one of: {', '.join(MULTI_OBJECTIVE)}") from None
    return opt


__all__ = ["MULTI_OBJECTIVE", "OPTIMIZERS", "Candidate", "Optimizer", "check_optimizer", "make_optimizer", "optimizer_options"]
