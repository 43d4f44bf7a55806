"""Benchmark-function objectives: ``function`` (a function of ``functions.py`` on its box)
and ``sleep`` (the same after a pause: a stand-in for a slow trial, used to test parallel
runs, wall-time budgets, failures and crash recovery)."""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from llmhpo.errors import ConfigError, TrialFailed
from llmhpo.objectives import ObjectiveKind, ParseContext, Result
from llmhpo.objectives.functions import get_function
from llmhpo.space import Float, SearchSpace


def _options(kind: str, table: Mapping[str, Any], allowed: dict[str, tuple]) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"[objective] has an unknown key '{key}' for type \"{kind}\"; "
                              f"allowed keys: {', '.join(['type', *allowed])}")
        types = allowed[key]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = " or ".join({int: "an integer", float: "a number", str: "a string"}[t] for t in types)
            raise ConfigError(f"[objective] {key} = {value!r} must be {names}")
        out[key] = float(value) if float in types and int not in types and isinstance(value, int) else value
    return out


@dataclass(frozen=True)
class FunctionSpec:
    kind: ClassVar[str] = "function"
    name: str = "branin"
    dim: int | None = None
    noise: float = 0.0  # standard deviation of Gaussian noise added to each value

    def to_tables(self) -> dict[str, dict[str, Any]]:
        return {"objective": asdict(self)}


class FunctionObjective:
    """A benchmark function; params are taken in the order of the space's variables."""

    def __init__(self, name: str, dim: int | None = None, noise: float = 0.0, seed: int = 0):
        self.function = get_function(name, dim)
        self.noise = noise
        self._rng = np.random.default_rng(seed)

    def space(self) -> SearchSpace:
        return SearchSpace([Float(f"x{i}", float(lo), float(hi)) for i, (lo, hi) in enumerate(self.function.bounds)])

    def __call__(self, params: Mapping[str, Any]) -> Result:
        x = list(params.values())
        v = self.function(x)
        if self.noise:
            v += self.noise * float(self._rng.standard_normal())
        return Result(v, {"regret": self.function(x) - self.function.f_min})


class FunctionKind(ObjectiveKind):
    name = "function"
    _allowed = {"name": (str,), "dim": (int,), "noise": (int, float)}

    def parse(self, objective, tables, ctx: ParseContext) -> FunctionSpec:
        spec = FunctionSpec(**_options(self.name, objective, self._allowed))
        get_function(spec.name, spec.dim)  # an unknown name or a bad dim, now
        if spec.noise < 0:
            raise ConfigError(f"[objective] noise = {spec.noise} must be >= 0")
        return spec

    def default_space(self, spec: FunctionSpec) -> SearchSpace:
        return FunctionObjective(spec.name, spec.dim).space()

    def check_space(self, spec: FunctionSpec, space: SearchSpace) -> None:
        d = get_function(spec.name, spec.dim).dim
        if space.dim != d:
            raise ConfigError(f"[space] defines {space.dim} variables but function '{spec.name}' takes {d}; "
                              "define one per argument, in order, or remove [space] to use its own box")

    def factory(self, spec: FunctionSpec):
        return functools.partial(FunctionObjective, spec.name, spec.dim, spec.noise)

    def describe(self, spec: FunctionSpec) -> str:
        return f"function {spec.name}"


@dataclass(frozen=True)
class SleepSpec:
    kind: ClassVar[str] = "sleep"
    seconds: float = 1.0
    function: str = "branin"
    dim: int | None = None
    log: str | None = None  # a file that gets one JSON line per finished evaluation
    fail_above: float | None = None  # values above this fail the trial

    def to_tables(self) -> dict[str, dict[str, Any]]:
        return {"objective": asdict(self)}


class SleepObjective:
    """Sleeps ``seconds`` then returns a benchmark function's value."""

    def __init__(self, spec: SleepSpec):
        self.spec = spec
        self.inner = FunctionObjective(spec.function, spec.dim)

    def __call__(self, params):
        t0 = time.time()
        time.sleep(self.spec.seconds)
        r = self.inner(params)
        if self.spec.fail_above is not None and r.value > self.spec.fail_above:
            raise TrialFailed(f"value {r.value:.3g} above fail_above={self.spec.fail_above}")
        if self.spec.log:
            with open(self.spec.log, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "params": dict(params), "value": r.value}) + "\n")
        r.timings["sleep"] = time.time() - t0
        return r


class SleepKind(FunctionKind):
    name = "sleep"
    _allowed = {"seconds": (int, float), "function": (str,), "dim": (int,), "log": (str,), "fail_above": (int, float)}

    def parse(self, objective, tables, ctx: ParseContext) -> SleepSpec:
        spec = SleepSpec(**_options(self.name, objective, self._allowed))
        get_function(spec.function, spec.dim)
        if spec.seconds < 0:
            raise ConfigError(f"[objective] seconds = {spec.seconds} must be >= 0")
        if spec.log:
            spec = SleepSpec(spec.seconds, spec.function, spec.dim, ctx.path(spec.log), spec.fail_above)
        return spec

    def default_space(self, spec: SleepSpec) -> SearchSpace:
        return FunctionObjective(spec.function, spec.dim).space()

    def check_space(self, spec: SleepSpec, space: SearchSpace) -> None:
        FunctionKind.check_space(self, FunctionSpec(spec.function, spec.dim), space)

    def factory(self, spec: SleepSpec):
        return functools.partial(SleepObjective, spec)

    def describe(self, spec: SleepSpec) -> str:
        return f"sleep {spec.seconds:g} s + {spec.function}"
