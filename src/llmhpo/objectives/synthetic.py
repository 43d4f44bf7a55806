"""Benchmark-function objectives: ``function`` (a function of ``functions.py`` on its box)
and ``sleep`` (the same after a pause: a stand-in for a slow trial, used to test parallel
runs, wall-time budgets, failures and crash recovery).

With ``[fidelity]`` (resource ``steps``) both become a multi-fidelity benchmark whose final
value is the function's, so the best final value is known, and whose learning curves
cross as real ones do: at r of R steps,

    y(x, r) = f(x) + B (1 - r / R)^p(x),   p(x) = 0.5 + 4.5 u_0(x),

where u_0 is the first variable scaled to [0, 1] (a "learning speed": small u_0 learns
slowly, so a configuration with the best final value can look poor early) and B is the
median gap f - f_min over 256 fixed random points (the function's own scale). A
configuration's progress is kept in its checkpoint folder, so a promoted one only
computes (and, for ``sleep``, waits for) its extra steps.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from llmhpo.errors import ConfigError, TrialFailed, did_you_mean
from llmhpo.objectives import Fidelity, ObjectiveKind, ParseContext, Result
from llmhpo.objectives.functions import check_rungs, get_function
from llmhpo.space import Float, SearchSpace


def _options(kind: str, table: Mapping[str, Any], allowed: dict[str, tuple]) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"[objective] has an unknown key '{key}'{did_you_mean(key, allowed)} for type \"{kind}\"; "
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
        self._scale: float | None = None

    def scale(self) -> float:
        """B: the median gap f - f_min over 256 fixed random points of the box."""
        if self._scale is None:
            u = np.random.default_rng(12345).random((256, self.function.dim))
            gaps = [self.function(self.function.from_unit(p)) - self.function.f_min for p in u]
            self._scale = float(np.median(gaps))
        return self._scale

    def curve_value(self, x: list[float], r: float, r_max: float) -> float:
        """y(x, r) of the module docstring (noiseless), or the function's own recorded curve."""
        if self.function.curve is not None:
            return self.function.curve(x, r, r_max)
        lo, hi = self.function.bounds[0]
        u0 = min(max((x[0] - lo) / (hi - lo), 0.0), 1.0)
        frac = min(r / r_max, 1.0)
        return self.function(x) + self.scale() * (1.0 - frac) ** (0.5 + 4.5 * u0)

    def curve(self, x: list[float], fidelity: Fidelity) -> tuple[float, float]:
        """(y(x, r), steps computed now): the learning-curve value at fidelity.value, going
        on from the configuration's checkpoint."""
        folder = Path(fidelity.checkpoint)
        state = folder / "state.json"
        before = json.loads(state.read_text())["steps"] if state.is_file() else 0.0
        y = self.curve_value(x, fidelity.value, fidelity.max)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"steps": fidelity.value}))
        tmp.replace(state)  # atomic: a kill leaves the old or the new state, never half of one
        return y, max(fidelity.value - before, 0.0)

    def space(self) -> SearchSpace:
        return SearchSpace([Float(f"x{i}", float(lo), float(hi)) for i, (lo, hi) in enumerate(self.function.bounds)])

    def __call__(self, params: Mapping[str, Any], fidelity: Fidelity | None = None) -> Result:
        x = list(params.values())
        metrics: dict[str, Any] = {"regret": self.function(x) - self.function.f_min,
                                   **{k: float(f(np.asarray(x, dtype=float))) for k, f in self.function.metrics}}
        if fidelity is None:
            v = self.function(x)
        else:
            v, metrics["resource_trained"] = self.curve(x, fidelity)
        if self.noise:
            v += self.noise * float(self._rng.standard_normal())
        return Result(v, metrics)


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

    def builtin_priors(self, spec: FunctionSpec) -> dict[str, Any]:
        if spec.name != "lora_smollm2":
            return {}
        from llmhpo.objectives.recorded import unit_priors

        return unit_priors()

    def check_space(self, spec: FunctionSpec, space: SearchSpace) -> None:
        f = get_function(spec.name, spec.dim)
        d = f.dim
        conditional = [v.name for v in space if v.when]
        if conditional:  # its arguments are positional: every one needs a value
            raise ConfigError(f"[space] {conditional[0]} has a 'when', but function '{spec.name}' takes all its "
                              "arguments in every trial; remove the condition")
        if space.dim != d:
            raise ConfigError(f"[space] defines {space.dim} variables but function '{spec.name}' takes {d}; "
                              "define one per argument, in order, or remove [space] to use its own box")
        for v, (lo, hi) in zip(space, f.bounds):  # a recorded landscape has no values outside its data
            if f.fixed and (not isinstance(v, Float) or v.log or v.low < lo or v.high > hi):
                raise ConfigError(f"[space] {v.name}: function '{spec.name}' takes its arguments on its own box "
                                  f"[{lo:g}, {hi:g}] (a recorded landscape, not a formula); give a linear float "
                                  "within it, or remove [space] to use its own box")

    def fidelity_resources(self, spec) -> tuple[str, ...]:
        return ("steps",)

    def check_fidelity(self, spec: FunctionSpec, r_min: float, r_max: float) -> None:
        check_rungs(spec.name, r_min, r_max)

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
    noise: float = 0.0  # standard deviation of Gaussian noise added to each value
    #: durations vary: ``seconds`` times a lognormal factor of mean 1 and this sigma, drawn from the
    #: point itself (the same configuration always takes as long), for parallel-efficiency benchmarks
    seconds_sigma: float = 0.0
    #: which draw of those durations (another seed: other durations for the same points)
    seconds_seed: int = 0

    def to_tables(self) -> dict[str, dict[str, Any]]:
        return {"objective": asdict(self)}


def sleep_seconds(spec: "SleepSpec", params: Mapping[str, Any]) -> float:
    """How long the sleep objective pauses at ``params``."""
    if not spec.seconds_sigma:
        return spec.seconds
    key = json.dumps(sorted((k, repr(v)) for k, v in params.items())).encode()
    if spec.seconds_seed:
        key += b"|%d" % spec.seconds_seed
    z = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little")).standard_normal()
    s = spec.seconds_sigma
    return spec.seconds * float(np.exp(s * z - s * s / 2))


class SleepObjective:
    """Sleeps ``seconds`` then returns a benchmark function's value."""

    def __init__(self, spec: SleepSpec):
        self.spec = spec
        self.inner = FunctionObjective(spec.function, spec.dim, spec.noise)

    def __call__(self, params, fidelity: Fidelity | None = None):
        t0 = time.time()
        if fidelity is not None:  # the work first, its checkpoint after (as training does)
            done = Path(fidelity.checkpoint) / "state.json"
            before = json.loads(done.read_text())["steps"] if done.is_file() else 0.0
            time.sleep(sleep_seconds(self.spec, params) * max(fidelity.value - before, 0.0) / fidelity.max)
        else:
            time.sleep(sleep_seconds(self.spec, params))
        r = self.inner(params, fidelity)
        if self.spec.fail_above is not None and r.value > self.spec.fail_above:
            raise TrialFailed(f"value {r.value:.3g} above fail_above={self.spec.fail_above}")
        if self.spec.log:
            with open(self.spec.log, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "params": dict(params), "value": r.value,
                                     "start": t0, "end": time.time(),
                                     **({"steps": fidelity.value, "trained": r.metrics["resource_trained"]}
                                        if fidelity else {})}) + "\n")
        r.timings["sleep"] = time.time() - t0
        return r


class SleepKind(FunctionKind):
    name = "sleep"
    _allowed = {"seconds": (int, float), "function": (str,), "dim": (int,), "log": (str,), "fail_above": (int, float),
                "noise": (int, float), "seconds_sigma": (int, float), "seconds_seed": (int,)}

    def parse(self, objective, tables, ctx: ParseContext) -> SleepSpec:
        spec = SleepSpec(**_options(self.name, objective, self._allowed))
        get_function(spec.function, spec.dim)
        if spec.seconds < 0:
            raise ConfigError(f"[objective] seconds = {spec.seconds} must be >= 0")
        if spec.seconds_sigma < 0:
            raise ConfigError(f"[objective] seconds_sigma = {spec.seconds_sigma} must be >= 0")
        if spec.log:
            spec = dataclasses.replace(spec, log=ctx.path(spec.log))
        return spec

    def default_space(self, spec: SleepSpec) -> SearchSpace:
        return FunctionObjective(spec.function, spec.dim).space()

    def check_space(self, spec: SleepSpec, space: SearchSpace) -> None:
        FunctionKind.check_space(self, FunctionSpec(spec.function, spec.dim), space)

    def check_fidelity(self, spec: SleepSpec, r_min: float, r_max: float) -> None:
        check_rungs(spec.function, r_min, r_max)

    def builtin_priors(self, spec: SleepSpec) -> dict[str, Any]:
        return FunctionKind.builtin_priors(self, FunctionSpec(spec.function, spec.dim))

    def factory(self, spec: SleepSpec):
        return functools.partial(SleepObjective, spec)

    def describe(self, spec: SleepSpec) -> str:
        return f"sleep {spec.seconds:g} s + {spec.function}"
