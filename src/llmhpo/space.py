"""Search spaces: the one place that maps native hyperparameters to and from the unit cube.

Optimisers only ever see points of [0, 1]^d. Log scales are handled by mapping the
logarithm linearly; integers and categoricals are relaxed to equal-width cells of [0, 1]
and rounded back ("relax and round", report section 3.3), so every integer or choice owns
the same share of the cube and decode(encode(v)) == v exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np

from llmhpo.errors import ConfigError, did_you_mean
from llmhpo.priors import Prior

Value = Union[float, int, str, bool]


@dataclass(frozen=True)
class Float:
    """A real variable in [low, high], optionally on a log scale."""

    name: str
    low: float
    high: float
    log: bool = False
    default: float | None = None
    prior: Prior | None = None  # where good values are believed to lie (llmhpo.priors)

    def __post_init__(self) -> None:
        _check_name(self.name)
        for key in ("low", "high"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"variable '{self.name}': {key}={v!r} must be a finite number")
        if self.low >= self.high:
            raise ConfigError(
                f"variable '{self.name}': low={self.low} must be below high={self.high}; swap or widen them"
            )
        if self.log and self.low <= 0:
            raise ConfigError(
                f"variable '{self.name}': log=true needs low > 0 (got low={self.low}); raise low or set log=false"
            )
        if self.default is not None and not (self.low <= self.default <= self.high):
            raise ConfigError(
                f"variable '{self.name}': default={self.default} lies outside [{self.low}, {self.high}]"
            )
        _check_prior(self)

    def to_unit(self, value: Any) -> float:
        v = float(value)
        if self.log:
            return (math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        return min(max(v, self.low), self.high)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"float in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Int:
    """An integer variable in [low, high] (both included), optionally on a log scale."""

    name: str
    low: int
    high: int
    log: bool = False
    default: int | None = None
    prior: Prior | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        for key in ("low", "high"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"variable '{self.name}': {key}={v!r} must be an integer for type int")
        if self.low >= self.high:
            raise ConfigError(
                f"variable '{self.name}': low={self.low} must be below high={self.high}; swap or widen them"
            )
        if self.log and self.low <= 0:
            raise ConfigError(
                f"variable '{self.name}': log=true needs low >= 1 (got low={self.low}); raise low or set log=false"
            )
        if self.default is not None and not (self.low <= self.default <= self.high):
            raise ConfigError(
                f"variable '{self.name}': default={self.default} lies outside [{self.low}, {self.high}]"
            )
        _check_prior(self)

    # Each integer k owns the cell [k - 0.5, k + 0.5] of the relaxed range (in log space if log).
    def _edges(self) -> tuple[float, float]:
        lo, hi = self.low - 0.5, self.high + 0.5
        return (math.log(lo), math.log(hi)) if self.log else (lo, hi)

    def to_unit(self, value: Any) -> float:
        a, b = self._edges()
        v = math.log(value) if self.log else float(value)
        return (v - a) / (b - a)

    def from_unit(self, u: float) -> int:
        u = min(max(float(u), 0.0), 1.0)
        a, b = self._edges()
        v = a + u * (b - a)
        v = math.exp(v) if self.log else v
        return int(min(max(round(v), self.low), self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"int in [{self.low}, {self.high}]" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Categorical:
    """A choice among a fixed list of values; choice i owns the cell [i/n, (i+1)/n]."""

    name: str
    choices: tuple = field(default_factory=tuple)
    default: Any = None
    prior: Prior | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.choices, (list, tuple)) or len(self.choices) == 0:
            raise ConfigError(f"variable '{self.name}': choices must be a non-empty list, e.g. choices = [\"a\", \"b\"]")
        object.__setattr__(self, "choices", tuple(self.choices))
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ConfigError(f"variable '{self.name}': choices {list(self.choices)} contain duplicates")
        if self.default is not None and self.default not in self.choices:
            raise ConfigError(f"variable '{self.name}': default={self.default!r} is not one of {list(self.choices)}")
        _check_prior(self)

    def to_unit(self, value: Any) -> float:
        return (self.choices.index(value) + 0.5) / len(self.choices)

    def from_unit(self, u: float) -> Any:
        u = min(max(float(u), 0.0), 1.0)
        return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return f"one of {list(self.choices)}"


Variable = Union[Float, Int, Categorical]


def _check_prior(var: "Variable") -> None:
    """A prior given as a table (``{mode, spread}``) becomes a Prior; either must fit ``var``."""
    if var.prior is not None:
        object.__setattr__(var, "prior", Prior.from_dict(var.name, var.prior))
        var.prior.check(var)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"variable name {name!r} must be an identifier such as 'learning_rate'")


class SearchSpace:
    """An ordered set of variables; ``encode``/``decode`` map params <-> points of [0, 1]^d."""

    def __init__(self, variables: Sequence[Variable]):
        variables = list(variables)
        if not variables:
            raise ConfigError("the search space is empty; add at least one variable under [space]")
        names = [v.name for v in variables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"variable '{dupes[0]}' is defined twice in the search space; keep one")
        self.variables: tuple[Variable, ...] = tuple(variables)

    @property
    def dim(self) -> int:
        return len(self.variables)

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    def __len__(self) -> int:
        return self.dim

    def __iter__(self):
        return iter(self.variables)

    def __getitem__(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    def decode(self, x: np.ndarray) -> dict[str, Value]:
        """x: (d,) point of [0, 1]^d -> native params (ints rounded, log undone)."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise ValueError(f"expected a point of shape ({self.dim},), got {x.shape}")
        return {v.name: v.from_unit(u) for v, u in zip(self.variables, x)}

    def snap(self, x: np.ndarray) -> np.ndarray:
        """x: (d,) point of [0, 1]^d -> the (d,) point of the configuration actually
        evaluated, ``encode(decode(x))``: integers and categoricals move to the centre of
        their cell, floats stay (up to rounding of log scales). Optimisers apply it to what
        they propose, so their model sees evaluated points and no configuration is proposed
        twice."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise ValueError(f"expected a point of shape ({self.dim},), got {x.shape}")
        out = np.clip(x, 0.0, 1.0).copy()
        for i, v in enumerate(self.variables):
            if not isinstance(v, Float):  # a float's own point is what is evaluated: keep it exactly
                out[i] = v.to_unit(v.from_unit(out[i]))
        return np.clip(out, 0.0, 1.0)

    def encode(self, params: Mapping[str, Any], fill_defaults: bool = False) -> np.ndarray:
        """Native params -> (d,) point of [0, 1]^d.

        With ``fill_defaults``, a missing variable takes its ``default`` or, without one,
        the centre of its range (used for partial warm-start configurations).
        """
        unknown = sorted(set(params) - set(self.names))
        if unknown:
            raise ConfigError(f"unknown parameter '{unknown[0]}'; the search space has {self.names}")
        out = np.empty(self.dim)
        for i, v in enumerate(self.variables):
            if v.name not in params:
                if not fill_defaults:
                    raise ConfigError(f"parameter '{v.name}' is missing; give a value ({v.describe()})")
                out[i] = 0.5 if v.default is None else v.to_unit(v.default)
                continue
            value = params[v.name]
            if not v.contains(value):
                raise ConfigError(f"parameter '{v.name}'={value!r} is not {v.describe()}")
            out[i] = v.to_unit(value)
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> list[dict[str, Any]]:
        out = []
        for v in self.variables:
            d: dict[str, Any] = {"name": v.name}
            if isinstance(v, Categorical):
                d.update(type="categorical", choices=list(v.choices))
            else:
                d.update(type="float" if isinstance(v, Float) else "int", low=v.low, high=v.high, log=v.log)
            if v.default is not None:
                d["default"] = v.default
            if v.prior is not None:  # left out when None: a stored study keeps its config hash
                d["prior"] = v.prior.to_dict()
            out.append(d)
        return out

    @classmethod
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]]) -> "SearchSpace":
        """Build from ``{name: {type=..., low=..., ...}}`` (TOML tables) or a list of dicts with ``name``."""
        items = (
            [dict(v, name=k) if isinstance(v, Mapping) else (k, v) for k, v in spec.items()]
            if isinstance(spec, Mapping)
            else list(spec)
        )
        return cls([variable_from_dict(item) for item in items])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.variables == other.variables

    def __repr__(self) -> str:
        return "SearchSpace(" + ", ".join(
            f"{v.name}: {v.describe()}" + ("" if v.prior is None else f" ({v.prior.describe(v)})")
            for v in self.variables) + ")"


_KEYS = {
    "float": {"name", "type", "low", "high", "log", "default", "prior"},
    "int": {"name", "type", "low", "high", "log", "default", "prior"},
    "categorical": {"name", "type", "choices", "default", "prior"},
}


def variable_from_dict(item: Any) -> Variable:
    if not isinstance(item, Mapping):
        name = item[0] if isinstance(item, tuple) else item
        raise ConfigError(f"variable '{name}' must be a table such as {{type = \"float\", low = 0, high = 1}}")
    name = item.get("name", "?")
    kind = item.get("type")
    if kind not in _KEYS:
        raise ConfigError(
            f"variable '{name}': unknown type {kind!r}{did_you_mean(kind, _KEYS)}; "
            "use one of \"float\", \"int\", \"categorical\""
        )
    extra = sorted(set(item) - _KEYS[kind])
    if extra:
        raise ConfigError(f"variable '{name}': unknown key '{extra[0]}'{did_you_mean(extra[0], _KEYS[kind])} "
                          f"for type {kind}; allowed: {sorted(_KEYS[kind] - {'name', 'type'})}")
    if kind == "categorical":
        if "choices" not in item:
            raise ConfigError(f"variable '{name}': missing key 'choices' for a categorical variable")
        return Categorical(name, tuple(item["choices"]) if isinstance(item["choices"], list) else item["choices"],
                           item.get("default"), prior=item.get("prior"))
    for key in ("low", "high"):
        if key not in item:
            raise ConfigError(f"variable '{name}': missing key '{key}' for a {kind} variable")
    log = item.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"variable '{name}': log={log!r} must be true or false")
    cls = Float if kind == "float" else Int
    low, high = item["low"], item["high"]
    if cls is Float:
        low = float(low) if isinstance(low, int) and not isinstance(low, bool) else low
        high = float(high) if isinstance(high, int) and not isinstance(high, bool) else high
    return cls(name, low, high, log, item.get("default"), prior=item.get("prior"))
