"""What a study asks of a trial beyond its one value: several objectives (``[study]
objectives``) and constraints (``[[constraint]]``), both read from the metrics a trial
records, and how they are told to an optimiser.

A metric is named as a trial records it: a key of its metrics (``"llmhpo_add/acc"``,
``"peak_memory_mb"``), ``"timings.<phase>"`` for seconds of a phase (``"timings.total"``,
``"timings.train"``), or ``"value"`` for the objective's own value. A constraint's bound
is a number, or relative to the base model's score of that metric (``"base - 0.01"``).
Constraint values follow Optuna's convention: one float per bound, <= 0 when it holds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from llmhpo.errors import ConfigError, TrialFailed, did_you_mean

DIRECTIONS = ("minimize", "maximize")
_METRIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./:,@=+\-]*$")
_RELATIVE = re.compile(r"^\s*base\s*(?:([+-])\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))?\s*$")


@dataclass(frozen=True)
class Objective:
    """One objective of a multi-objective study: a metric and its direction."""

    metric: str
    direction: str

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "direction": self.direction}


@dataclass(frozen=True)
class Bound:
    """One side of a constraint: ``offset`` alone (absolute) or the base model's score plus it."""

    offset: float
    relative: bool = False

    def resolve(self, base: float | None) -> float:
        """The bound's number; ``base``: the base model's score of the metric (relative bounds)."""
        if not self.relative:
            return self.offset
        if base is None:
            raise ValueError("a relative bound needs the base model's score")
        return base + self.offset

    def text(self) -> float | str:
        """As written in the TOML file."""
        if not self.relative:
            return self.offset
        return "base" if self.offset == 0 else f"base {'-' if self.offset < 0 else '+'} {abs(self.offset):g}"


@dataclass(frozen=True)
class Constraint:
    """``[[constraint]]``: ``metric`` at least ``min`` and/or at most ``max``."""

    metric: str
    min: Bound | None = None
    max: Bound | None = None

    @property
    def relative(self) -> bool:
        return any(b is not None and b.relative for b in (self.min, self.max))

    def values(self, x: float, base: float | None) -> list[float]:
        """One value per bound, <= 0 where it holds (min - x, x - max)."""
        out = []
        if self.min is not None:
            out.append(self.min.resolve(base) - x)
        if self.max is not None:
            out.append(x - self.max.resolve(base))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, **{k: b.text() for k, b in (("min", self.min), ("max", self.max))
                                          if b is not None}}


def _no_unknown(where: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(table) - set(allowed))
    if extra:
        raise ConfigError(f"{where} has an unknown key '{extra[0]}'{did_you_mean(extra[0], allowed)}; "
                          f"allowed keys: {', '.join(allowed)}")


def _metric_name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not _METRIC.match(name) or name == "timings." or name.endswith("."):
        raise ConfigError(f"{where} metric = {name!r} is not a metric name; write a key of the trial's metrics "
                          "(\"llmhpo_add/acc\", \"peak_memory_mb\"), \"timings.<phase>\" or \"value\"")
    return name


def parse_objectives(entries: Any) -> tuple[Objective, ...]:
    """``[study] objectives = [{ metric = ..., direction = ... }, ...]``: at least two, distinct."""
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ConfigError("[study] objectives must be a list of tables: "
                          "[{ metric = \"a/acc\", direction = \"maximize\" }, { metric = \"b/acc\", ... }]")
    if len(entries) < 2:
        raise ConfigError(f"[study] objectives lists {len(entries)} objective(s); several objectives need at least 2 "
                          "(for one, drop objectives and set [study] direction)")
    out = []
    for i, e in enumerate(entries):
        where = f"[study] objectives entry {i + 1}:"
        _no_unknown(where, e, ("metric", "direction"))
        metric = _metric_name(where, e.get("metric"))
        direction = e.get("direction")
        if direction not in DIRECTIONS:
            raise ConfigError(f"{where} direction = {direction!r} must be \"minimize\" or \"maximize\"")
        out.append(Objective(metric, direction))
    names = [o.metric for o in out]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"[study] objectives names {n!r} twice; list each metric once")
    return tuple(out)


def _bound(where: str, key: str, v: Any) -> Bound | None:
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not math.isfinite(v):
            raise ConfigError(f"{where} {key} = {v!r} must be finite")
        return Bound(float(v))
    m = _RELATIVE.match(v) if isinstance(v, str) else None
    if m is None:
        raise ConfigError(f"{where} {key} = {v!r} must be a number, or relative to the base model's score: "
                          "\"base\", \"base - 0.01\", \"base + 2\"")
    offset = float(m.group(2)) if m.group(2) else 0.0
    return Bound(-offset if m.group(1) == "-" else offset, relative=True)


def parse_constraints(entries: Any, scores_base: bool) -> tuple[Constraint, ...]:
    """``[[constraint]]`` tables; ``scores_base``: whether the study scores the base model
    (relative bounds need it)."""
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ConfigError("constraint must be a list of tables: write [[constraint]] then metric = ..., min = ...")
    out = []
    for i, e in enumerate(entries):
        where = f"[[constraint]] number {i + 1}:"
        _no_unknown(where, e, ("metric", "min", "max"))
        metric = _metric_name(where, e.get("metric"))
        lo, hi = _bound(where, "min", e.get("min")), _bound(where, "max", e.get("max"))
        if lo is None and hi is None:
            raise ConfigError(f"{where} needs min, max or both (e.g. min = 0.5, or max = \"base + 0.01\")")
        if lo is not None and hi is not None and lo.relative == hi.relative and lo.offset > hi.offset:
            raise ConfigError(f"{where} min = {lo.text()!r} is above max = {hi.text()!r}; no trial could meet both")
        c = Constraint(metric, lo, hi)
        if c.relative and not scores_base:
            raise ConfigError(f"{where} a bound relative to \"base\" needs the base model's score, which this "
                              "objective does not compute; give a number")
        out.append(c)
    return tuple(out)


def metric_value(name: str, value: float | None, metrics: Mapping[str, Any] | None,
                 timings: Mapping[str, Any] | None) -> float | None:
    """The number ``name`` names in a trial's results (module docstring); None when it has none."""
    if name == "value":
        v: Any = value
    elif name.startswith("timings."):
        v = (timings or {}).get(name[len("timings."):])
    else:
        v = (metrics or {}).get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _missing(name: str, metrics: Mapping[str, Any] | None, timings: Mapping[str, Any] | None) -> TrialFailed:
    have = ["value", *sorted(k for k, v in (metrics or {}).items() if isinstance(v, (int, float))
                             and not isinstance(v, bool)), *(f"timings.{k}" for k in sorted(timings or {}))]
    return TrialFailed(f"the trial has no number for metric {name!r}; it has: {', '.join(have)}")


def evaluate(objectives: Sequence[Objective], constraints: Sequence[Constraint], value: float | None,
             metrics: Mapping[str, Any] | None, timings: Mapping[str, Any] | None,
             base_metrics: Mapping[str, Any] | None) -> tuple[list[float] | None, list[float] | None]:
    """(objective values, constraint values) of a finished trial, each None when the study
    has none. Raises TrialFailed naming a missing metric and the metrics the trial has."""
    values = None
    if objectives:
        values = []
        for o in objectives:
            v = metric_value(o.metric, value, metrics, timings)
            if v is None:
                raise _missing(o.metric, metrics, timings)
            values.append(v)
    cons = None
    if constraints:
        cons = []
        for c in constraints:
            v = metric_value(c.metric, value, metrics, timings)
            if v is None:
                raise _missing(c.metric, metrics, timings)
            base = metric_value(c.metric, None, base_metrics, None) if c.relative else None
            if c.relative and base is None:
                raise TrialFailed(f"[[constraint]] {c.metric!r} is relative to the base model's score, "
                                  "which has no such metric; give a number")
            cons.extend(c.values(v, base))
    return values, cons


def feasible(constraints: Sequence[float] | None) -> bool:
    """Whether every constraint value holds (<= 0); no constraints: feasible."""
    return constraints is None or all(c <= 0 for c in constraints)


def signed(directions: Sequence[str], values: Sequence[float]) -> list[float]:
    """``values`` as an optimiser minimises them (maximised ones negated)."""
    return [v if d == "minimize" else -v for d, v in zip(directions, values)]


def told(directions: Sequence[str], value: float | None, values: Sequence[float] | None,
         constraints: Sequence[float] | None) -> tuple[Any, list[float] | None]:
    """(value, constraints) as an optimiser is told them: one minimised number, or with
    several objectives (``values``) one per objective; None for a failure."""
    cons = None if constraints is None else list(constraints)
    if value is None:
        return None, None
    if len(directions) > 1:
        return signed(directions, values), cons
    return (value if directions[0] == "minimize" else -value), cons
