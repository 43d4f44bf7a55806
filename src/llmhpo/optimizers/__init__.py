"""The optimisers, all behind one protocol (``ask(n)`` / ``tell(candidate, value)``), and
the one table that names them."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from llmhpo.errors import ConfigError
from llmhpo.optimizers.annealing import SimulatedAnnealing
from llmhpo.optimizers.base import Candidate, Optimizer
from llmhpo.optimizers.bayesian import BayesianOptimization
from llmhpo.optimizers.genetic import GeneticAlgorithm
from llmhpo.optimizers.local_search import IteratedLocalSearch
from llmhpo.optimizers.optuna_based import OptunaCMAES, OptunaGP, OptunaTPE
from llmhpo.optimizers.partition import DIRECT, SOO, BaMSOO, FractalDecomposition
from llmhpo.optimizers.sampling import GridSearch, LatinHypercube, RandomSearch, Sobol

OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls
    for cls in (
        RandomSearch, GridSearch, LatinHypercube, Sobol,
        SimulatedAnnealing, GeneticAlgorithm, IteratedLocalSearch,
        BayesianOptimization,
        SOO, BaMSOO, DIRECT, FractalDecomposition,
        OptunaTPE, OptunaCMAES, OptunaGP,
    )
}


def optimizer_options(name: str) -> dict[str, Any]:
    """The options an optimiser accepts, with their defaults."""
    cls = OPTIMIZERS[name]
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "dim", "rng", "budget")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_optimizer(name: str, options: dict[str, Any] | None = None) -> None:
    """Raise ConfigError for an unknown optimiser or option, before anything runs."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(OPTIMIZERS[name].__init__).parameters.values()):
        return  # Optuna samplers take their own keyword arguments, checked at construction
    allowed = optimizer_options(name)
    for key in options or {}:
        if key not in allowed:
            raise ConfigError(
                f"optimizer '{name}' has no option '{key}'; its options are: {', '.join(allowed) or 'none'}"
            )


def make_optimizer(name: str, dim: int, rng: np.random.Generator, budget: int | None = None,
                   options: dict[str, Any] | None = None) -> Optimizer:
    check_optimizer(name, options)
    try:
        return OPTIMIZERS[name](dim, rng, budget, **(options or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"optimizer '{name}': bad options {options}: {e}") from e


__all__ = ["OPTIMIZERS", "Candidate", "Optimizer", "check_optimizer", "make_optimizer", "optimizer_options"]
