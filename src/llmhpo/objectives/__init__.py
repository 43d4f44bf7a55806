"""Objectives: plain callables ``params -> Result`` that run inside a worker.

An objective knows nothing of optimisers or storage. ``build_objective`` turns the
``[objective]`` part of a study config into one; heavy state (a base model, a task index)
lives in the objective object, which each worker builds once and reuses across trials.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from llmhpo.errors import ConfigError, TrialFailed


@dataclass
class Result:
    """What one trial produced. value: the objective; metrics: everything else measured;
    timings: seconds per phase."""

    value: float
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.value = float(self.value)
        if not math.isfinite(self.value):
            raise TrialFailed(f"objective value is {self.value}")


class FunctionObjective:
    """A benchmark function on its native box (params x0..x{d-1})."""

    def __init__(self, name: str, dim: int | None = None, noise: float = 0.0, seed: int = 0):
        from llmhpo.objectives.functions import get_function

        self.function = get_function(name, dim)
        self.noise = noise
        import numpy as np

        self._rng = np.random.default_rng(seed)

    def space(self):
        from llmhpo.space import Float, SearchSpace

        return SearchSpace([Float(f"x{i}", float(lo), float(hi)) for i, (lo, hi) in enumerate(self.function.bounds)])

    def __call__(self, params: Mapping[str, Any]) -> Result:
        x = [params[f"x{i}"] for i in range(self.function.dim)]
        v = self.function(x)
        if self.noise:
            v += self.noise * float(self._rng.standard_normal())
        return Result(v, {"regret": self.function(x) - self.function.f_min})


class SleepObjective:
    """Sleeps ``seconds`` then returns a benchmark function's value: a stand-in for a slow
    trial, used to test parallel runs, wall-time budgets and crash recovery.
    ``log``: a file that gets one line per finished evaluation."""

    def __init__(self, seconds: float = 1.0, function: str = "branin", dim: int | None = None, log: str | None = None,
                 fail_above: float | None = None):
        self.inner = FunctionObjective(function, dim)
        self.seconds, self.log, self.fail_above = seconds, log, fail_above

    def space(self):
        return self.inner.space()

    def __call__(self, params):
        t0 = time.time()
        time.sleep(self.seconds)
        r = self.inner(params)
        if self.fail_above is not None and r.value > self.fail_above:
            raise TrialFailed(f"value {r.value:.3g} above fail_above={self.fail_above}")
        if self.log:
            import json
            import os

            with open(self.log, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "params": dict(params), "value": r.value}) + "\n")
        r.timings["sleep"] = time.time() - t0
        return r


def _finetune(**options):
    from llmhpo.objectives.finetune import FinetuneObjective

    return FinetuneObjective(**options)


OBJECTIVES: dict[str, Callable[..., Any]] = {
    "function": FunctionObjective,
    "sleep": SleepObjective,
    "finetune": _finetune,
}


def build_objective(kind: str, options: Mapping[str, Any]):
    if kind not in OBJECTIVES:
        raise ConfigError(f"[objective] type = {kind!r} is unknown; use one of: {', '.join(OBJECTIVES)}")
    try:
        return OBJECTIVES[kind](**dict(options))
    except TypeError as e:
        raise ConfigError(f"[objective] type = {kind!r}: {e}") from e
