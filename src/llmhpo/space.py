"""Search spaces: the one place that maps native hyperparameters to and from the unit cube.

Optimisers only ever see points of [0, 1]^d. Log scales are handled by mapping the
logarithm linearly; integers and categoricals are relaxed to equal-width cells of [0, 1]
and rounded back ("relax and round", report section 3.3), so every integer or choice owns
the same share of the cube and decode(encode(v)) == v exactly.

Conditional variables (``when``): a variable may be active only when categorical or integer
variables take listed values. Optimisers still see the whole cube; ``decode`` drops the
inactive variables and ``snap`` moves their coordinates to one canonical value, so points
that differ only there are one configuration.
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
    #: active only when each named variable takes one of the listed values (empty: always)
    when: Any = ()

    def __post_init__(self) -> None:
        _check_name(self.name)
        _set_when(self)
        for key in ("low", "high"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"variable '{self.name}': {key}={v!r} must be a finite number")
        _check_range(self, "low > 0")

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
    #: active only when each named variable takes one of the listed values (empty: always)
    when: Any = ()

    def __post_init__(self) -> None:
        _check_name(self.name)
        _set_when(self)
        for key in ("low", "high"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"variable '{self.name}': {key}={v!r} must be an integer for type int")
        _check_range(self, "low >= 1")

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
    #: active only when each named variable takes one of the listed values (empty: always)
    when: Any = ()

    def __post_init__(self) -> None:
        _check_name(self.name)
        _set_when(self)
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


def _check_range(var, log_needs: str) -> None:
    """The checks a numeric variable's bounds, default and prior share; log_needs: what
    log=true asks of low ("low > 0", or "low >= 1" for integers)."""
    if var.low >= var.high:
        raise ConfigError(f"variable '{var.name}': low={var.low} must be below high={var.high}; swap or widen them")
    if var.log and var.low <= 0:
        raise ConfigError(
            f"variable '{var.name}': log=true needs {log_needs} (got low={var.low}); raise low or set log=false")
    if var.default is not None and not (var.low <= var.default <= var.high):
        raise ConfigError(f"variable '{var.name}': default={var.default} lies outside [{var.low}, {var.high}]; "
                          "move it inside the range or widen the range")
    _check_prior(var)


def _check_prior(var: "Variable") -> None:
    """A prior given as a table (``{mode, spread}``) becomes a Prior; either must fit ``var``."""
    if var.prior is not None:
        object.__setattr__(var, "prior", Prior.from_dict(var.name, var.prior))
        var.prior.check(var)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"variable name {name!r} must be an identifier such as 'learning_rate'")


def _set_when(v: Any) -> None:
    """Normalise a variable's ``when`` (a mapping parent -> value or list of values) to a
    hashable tuple of (parent, (values, ...)) pairs, in the order given."""
    when = v.when
    if when is None:
        when = ()
    if isinstance(when, Mapping):
        items = list(when.items())
    elif isinstance(when, (list, tuple)) and all(isinstance(p, tuple) and len(p) == 2 for p in when):
        items = list(when)
    else:
        raise ConfigError(f"variable '{v.name}': when={when!r} must be a table such as "
                          "when = { scheduler = [\"linear\", \"cosine\"] }")
    out = []
    for parent, values in items:
        if not isinstance(parent, str) or not parent.isidentifier():
            raise ConfigError(f"variable '{v.name}': when names {parent!r}, which is not a variable name")
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not values:
            raise ConfigError(f"variable '{v.name}': when {parent} = [] lists no value; give at least one")
        for value in values:
            if not isinstance(value, (str, int, float, bool)):
                raise ConfigError(f"variable '{v.name}': when {parent} = {value!r} must be a string, number or boolean")
        out.append((parent, values))
    object.__setattr__(v, "when", tuple(out))


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind (True is not 1, as a condition reads it)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _listed(value: Any, values: Sequence[Any]) -> bool:
    return any(_same(value, w) for w in values)


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
        self._order = self._check_conditions()

    def _check_conditions(self) -> list[int]:
        """Validate every ``when`` and return the variables' indices with each parent
        before its children (the order in which activity is decided)."""
        index = {v.name: i for i, v in enumerate(self.variables)}
        for v in self.variables:
            for parent, values in v.when:
                if parent == v.name:
                    raise ConfigError(f"variable '{v.name}': when names the variable itself; "
                                      "a variable can only depend on another one")
                if parent not in index:
                    raise ConfigError(f"variable '{v.name}': when names '{parent}'{did_you_mean(parent, index)}, "
                                      f"which is not in the search space {self.names}")
                p = self.variables[index[parent]]
                if isinstance(p, Float):
                    raise ConfigError(f"variable '{v.name}': when names '{parent}', a float; "
                                      "a condition can only name a categorical or an int variable")
                for value in values:
                    ok = _listed(value, p.choices) if isinstance(p, Categorical) else p.contains(value)
                    if not ok:
                        raise ConfigError(f"variable '{v.name}': when {parent} = {value!r}, "
                                          f"but '{parent}' is {p.describe()}")
        order: list[int] = []
        state: dict[int, int] = {}  # 1: being visited, 2: done

        def visit(i: int, path: list[str]) -> None:
            if state.get(i) == 2:
                return
            if state.get(i) == 1:
                cycle = path[path.index(self.variables[i].name):] + [self.variables[i].name]
                raise ConfigError(f"the conditions form a cycle: {' -> '.join(cycle)} (each depends on the next); "
                                  "remove one of these 'when'")
            state[i] = 1
            for parent, _ in self.variables[i].when:
                visit(index[parent], path + [self.variables[i].name])
            state[i] = 2
            order.append(i)

        for i in range(len(self.variables)):
            visit(i, [])
        return order

    @property
    def conditional(self) -> bool:
        """Whether any variable has a ``when``."""
        return any(v.when for v in self.variables)

    def _activity(self, values: Mapping[str, Any]) -> dict[str, bool]:
        """name -> whether it is active, given the values of (at least) the active parents;
        a variable is active when its parents are active and take one of the listed values."""
        active: dict[str, bool] = {}
        for i in self._order:
            v = self.variables[i]
            active[v.name] = all(active[p] and p in values and _listed(values[p], allowed) for p, allowed in v.when)
        return active

    def active(self, params: Mapping[str, Any]) -> list[str]:
        """The names of the variables active under ``params`` (in variable order); a parent
        missing from params counts as not matching."""
        act = self._activity(params)
        return [v.name for v in self.variables if act[v.name]]

    def canonical(self, v: Variable) -> float:
        """The unit coordinate an inactive variable takes: its default's, or the centre of its
        range (moved to the centre of its cell for ints and categoricals)."""
        if v.default is not None:
            return min(max(v.to_unit(v.default), 0.0), 1.0)
        return 0.5 if isinstance(v, Float) else min(max(v.to_unit(v.from_unit(0.5)), 0.0), 1.0)

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
        values = {v.name: v.from_unit(u) for v, u in zip(self.variables, x)}
        if not self.conditional:
            return values
        act = self._activity(values)
        return {k: val for k, val in values.items() if act[k]}

    def snap(self, x: np.ndarray) -> np.ndarray:
        """x: (d,) point of [0, 1]^d -> the (d,) point of the configuration actually
        evaluated, ``encode(decode(x))``: integers and categoricals move to the centre of
        their cell, floats stay (up to rounding of log scales). Optimisers apply it to what
        they propose, so their model sees evaluated points and no configuration is proposed
        twice. An inactive variable's coordinate moves to its canonical value
        (``canonical``), so points that differ only there are the same configuration."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.dim,):
            raise ValueError(f"expected a point of shape ({self.dim},), got {x.shape}")
        out = np.clip(x, 0.0, 1.0).copy()
        for i, v in enumerate(self.variables):
            if not isinstance(v, Float):  # a float's own point is what is evaluated: keep it exactly
                out[i] = v.to_unit(v.from_unit(out[i]))
        if self.conditional:
            act = self._activity({v.name: v.from_unit(u) for v, u in zip(self.variables, out)})
            for i, v in enumerate(self.variables):
                if not act[v.name]:
                    out[i] = self.canonical(v)
        return np.clip(out, 0.0, 1.0)

    def encode(self, params: Mapping[str, Any], fill_defaults: bool = False,
               drop_inactive: bool = False) -> np.ndarray:
        """Native params -> (d,) point of [0, 1]^d.

        With ``fill_defaults``, a missing variable takes its ``default`` or, without one,
        the centre of its range (used for partial warm-start configurations).

        With conditions (``when``), params hold the active variables only: an inactive one
        takes its canonical coordinate, and giving a value to it is an error, unless
        ``drop_inactive`` (an earlier study's trial, from a space where it applied): then the
        value is ignored.
        """
        unknown = sorted(set(params) - set(self.names))
        if unknown:
            raise ConfigError(f"unknown parameter '{unknown[0]}'; the search space has {self.names}")
        out = np.empty(self.dim)
        values: dict[str, Any] = {}  # what decides the conditions: given, or filled in
        active: dict[str, bool] = {}
        for i in self._order:
            v = self.variables[i]
            active[v.name] = all(active[p] and p in values and _listed(values[p], allowed) for p, allowed in v.when)
            if not active[v.name]:
                if v.name in params and not drop_inactive:
                    why = next(f"{p}={values[p]!r}" if active[p] and p in values else f"'{p}' is inactive"
                               for p, allowed in v.when
                               if not (active[p] and p in values and _listed(values[p], allowed)))
                    need = ", ".join(f"{p} in {list(allowed)}" for p, allowed in v.when)
                    raise ConfigError(f"parameter '{v.name}' is inactive here ({why}; it applies only when {need}); "
                                      "remove it")
                out[i] = self.canonical(v)
                continue
            if v.name not in params:
                if not fill_defaults:
                    raise ConfigError(f"parameter '{v.name}' is missing; give a value ({v.describe()})")
                out[i] = 0.5 if v.default is None else v.to_unit(v.default)
                values[v.name] = v.from_unit(out[i])
                continue
            value = params[v.name]
            if not v.contains(value):
                raise ConfigError(f"parameter '{v.name}'={value!r} is not {v.describe()}")
            out[i] = v.to_unit(value)
            values[v.name] = value
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> list[dict[str, Any]]:
        return [variable_to_dict(v) for v in self.variables]

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
        def when(v: Variable) -> str:
            return (" when " if v.when else "") + " and ".join(
                f"{p} in {list(values)}" if len(values) > 1 else f"{p} = {values[0]!r}" for p, values in v.when)

        return "SearchSpace(" + ", ".join(
            f"{v.name}: {v.describe()}{when(v)}" + ("" if v.prior is None else f" ({v.prior.describe(v)})")
            for v in self.variables) + ")"


_KEYS = {
    "float": {"name", "type", "low", "high", "log", "default", "prior", "when"},
    "int": {"name", "type", "low", "high", "log", "default", "prior", "when"},
    "categorical": {"name", "type", "choices", "default", "prior", "when"},
}


def variable_from_dict(item: Any) -> Variable:
    if not isinstance(item, Mapping):
        name = item[0] if isinstance(item, tuple) else item
        raise ConfigError(f"variable '{name}' must be a table such as {{type = \"float\", low = 0, high = 1}}")
    name = item.get("name", "?")
    kind = item.get("type")
    if kind is None:
        raise ConfigError(f"variable '{name}' has no type; give type = \"float\", \"int\" or \"categorical\" with "
                          "its range or choices (a table of only prior, default or when changes a variable of a "
                          "preset or of the objective's own space)")
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
                           item.get("default"), prior=item.get("prior"), when=item.get("when") or ())
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
    return cls(name, low, high, log, item.get("default"), prior=item.get("prior"), when=item.get("when") or ())


def variable_to_dict(v: Variable) -> dict[str, Any]:
    """One variable as its table (with ``name``), as a stored config keeps it."""
    d: dict[str, Any] = {"name": v.name}
    if isinstance(v, Categorical):
        d.update(type="categorical", choices=list(v.choices))
    else:
        d.update(type="float" if isinstance(v, Float) else "int", low=v.low, high=v.high, log=v.log)
    if v.default is not None:
        d["default"] = v.default
    if v.prior is not None:  # left out when None: a stored study keeps its config hash
        d["prior"] = v.prior.to_dict()
    if v.when:  # omitted when empty: an unconditional space serialises (and hashes) as before
        d["when"] = {p: list(values) for p, values in v.when}
    return d
