"""Prior beliefs about where good values lie, and their form on the unit cube.

A ``Prior`` is what a user writes on a variable (``prior = { mode = 2e-4, spread = 0.5 }``):
a normal with mean ``mode`` and standard deviation ``spread`` in the variable's own scale
(log variables in decades), truncated to the variable's range; for a categorical, a weight
per choice. ``UnitPrior`` is the same belief over the optimisers' [0, 1]^d: a log density
(BO weights its acquisition by it, piBO: Hvarfner et al. 2022) and an inverse CDF (sampling
optimisers push their uniform designs through it, so a stratified design stays stratified in
quantile space). Variables without a prior stay uniform.

An integer's prior is the normal over its relaxed range [low - 0.5, high + 0.5], so the mass
of each integer is the density integrated over its cell; a categorical's density is constant
on each choice's cell. numpy only; ``log_pdf`` is plain arithmetic and also takes torch tensors.

``llmhpo.space`` builds on this module, so a variable is read here through what every
variable has (``to_unit``, ``log``, ``low``/``high``; ``choices`` for a categorical), not its class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from llmhpo.errors import ConfigError

#: the weight of a choice a categorical prior does not list, when the listed ones take it all
_FLOOR = 0.01
#: the widest spread a prior may have, in widths of its variable's range (wider is flat)
_WIDEST = 100


@dataclass(frozen=True)
class Prior:
    """A belief about one variable. Float/Int: ``mode`` and ``spread`` (> 0) in the variable's
    own scale (decades for log variables). Categorical: ``weights``, choice -> weight >= 0;
    unlisted choices share what is left of 1 (or a small floor)."""

    mode: float | None = None
    spread: float | None = None
    #: (choice, weight) pairs; a mapping is accepted and kept as pairs (the prior stays hashable)
    weights: Any = ()

    def __post_init__(self) -> None:
        w = self.weights.items() if isinstance(self.weights, Mapping) else self.weights
        try:
            pairs = tuple((c, w_) for c, w_ in w)
        except (TypeError, ValueError):
            raise ConfigError(f"prior weights = {self.weights!r} must be a table such as "
                              "{ \"cosine\" = 0.6 }") from None
        object.__setattr__(self, "weights", pairs)

    def describe(self, var) -> str:
        """A few words for ``llmhpo check``, e.g. ``prior 0.0002 +- 0.5 decades``."""
        if self.weights:  # every choice, the unlisted ones' shares included
            return "prior " + ", ".join(f"{c}: {w:.3g}" for c, w in zip(var.choices, choice_probs(var)))
        unit = (" decade" if self.spread == 1 else " decades") if getattr(var, "log", False) else ""
        return f"prior {self.mode:g} +- {self.spread:g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        if self.weights:
            return {"weights": dict(self.weights)}  # TOML keys: the choices as strings
        return {"mode": self.mode, "spread": self.spread}

    @classmethod
    def from_dict(cls, name: str, d: Any) -> "Prior":
        """``{mode, spread}`` or ``{weights}`` as a TOML table gives it; ConfigError otherwise."""
        if isinstance(d, Prior):
            return d
        if not isinstance(d, Mapping):
            raise ConfigError(f"variable '{name}': prior = {d!r} must be a table such as "
                              "prior = { mode = 2e-4, spread = 0.5 }")
        allowed = {"mode", "spread", "weights"}
        extra = sorted(set(d) - allowed)
        if extra:
            raise ConfigError(f"variable '{name}': prior has an unknown key '{extra[0]}'; "
                              "use mode and spread (or weights for a categorical)")
        try:
            return cls(d.get("mode"), d.get("spread"), d.get("weights") or {})
        except ConfigError as e:
            raise ConfigError(f"variable '{name}': {e}") from None

    def check(self, var) -> None:
        """ConfigError when this prior does not fit the variable ``var`` (a space.Variable)."""
        where = f"variable '{var.name}': prior"
        if _categorical(var):
            if self.mode is not None or self.spread is not None or not self.weights:
                raise ConfigError(f"{where} of a categorical gives weights, e.g. prior = "
                                  f"{{ weights = {{ {_toml_key(var.choices[0])} = 0.6 }} }}")
            named: dict[Any, Any] = {}
            for c, w in self.weights:
                choice = _choice(var, c)
                if choice is None:
                    raise ConfigError(f"{where} weights name {c!r}, which is not one of {list(var.choices)}")
                if choice in named:
                    raise ConfigError(f"{where} weights name {choice!r} twice ({named[choice]!r} and {c!r}); "
                                      "keep one")
                named[choice] = c
                if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf:
                    raise ConfigError(f"{where} weight of {c!r} = {w!r} must be a finite number >= 0")
            if sum(w for _, w in self.weights) <= 0 and len(self.weights) >= len(var.choices):
                raise ConfigError(f"{where} weights are all 0; give at least one choice a positive weight")
            return
        if self.weights:
            raise ConfigError(f"{where} weights are for categorical variables; give mode and spread")
        for key in ("mode", "spread"):
            v = getattr(self, key)
            if v is None:
                mode = var.low if self.mode is None else self.mode
                raise ConfigError(f"{where} has no {key}; give both, e.g. prior = {{ mode = {mode:g}, "
                                  f"spread = {1 if var.log else 0.1:g} }}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{where} {key} = {v!r} must be a finite number")
        if not var.low <= self.mode <= var.high:
            raise ConfigError(f"{where} mode = {self.mode:g} lies outside [{var.low:g}, {var.high:g}]; "
                              "move it inside the range")
        unit = " in decades" if var.log else ""
        if self.spread <= 0:
            raise ConfigError(f"{where} spread = {self.spread:g} must be > 0 (a standard deviation{unit})")
        width = math.log10(var.high / var.low) if var.log else var.high - var.low
        if self.spread > _WIDEST * width:
            raise ConfigError(f"{where} spread = {self.spread:g} is over {_WIDEST} times the range's width "
                              f"({width:g}{unit}): so wide a prior is flat; leave the prior out")


@dataclass(frozen=True)
class _Normal:
    """A normal of mean ``mu`` and sd ``sd`` (unit coordinates), truncated to [0, 1]."""

    mu: float
    sd: float

    def cdf_bounds(self) -> tuple[float, float]:
        from scipy.special import ndtr

        return float(ndtr(-self.mu / self.sd)), float(ndtr((1 - self.mu) / self.sd))

    @cached_property
    def _log_norm(self) -> float:
        """log of the density's constant factor (the truncated normal's normaliser)."""
        lo, hi = self.cdf_bounds()
        return -math.log(self.sd) - 0.5 * math.log(2 * math.pi) - math.log(hi - lo)

    def log_pdf(self, x):
        return self._log_norm - 0.5 * ((x - self.mu) / self.sd) ** 2

    def ppf(self, u: np.ndarray) -> np.ndarray:
        from scipy.special import ndtri

        lo, hi = self.cdf_bounds()
        p = np.clip(lo + u * (hi - lo), 1e-300, 1 - 1e-16)
        return np.clip(self.mu + self.sd * ndtri(p), 0.0, 1.0)


@dataclass(frozen=True)
class _Cells:
    """A density constant on each of n equal cells of [0, 1]; ``p``: each cell's mass."""

    p: tuple[float, ...]

    def log_pdf(self, x):
        n = len(self.p)
        logd = [math.log(max(q, 1e-300) * n) for q in self.p]
        out = logd[0] + 0 * x
        for i in range(1, n):  # a step at each inner edge (works on numpy arrays and torch tensors)
            out = out + (logd[i] - logd[i - 1]) * (x >= i / n)
        return out

    def ppf(self, u: np.ndarray) -> np.ndarray:
        n = len(self.p)
        cum = np.concatenate([[0.0], np.cumsum(self.p)])
        cum /= cum[-1]
        i = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, n - 1)
        frac = (u - cum[i]) / np.maximum(cum[i + 1] - cum[i], 1e-300)
        return np.clip((i + np.clip(frac, 0.0, 1.0)) / n, 0.0, 1.0)


def _choice(var, c: Any) -> Any:
    """The categorical's choice that weight key ``c`` names (TOML keys are strings: "16" names
    16, "2e-4" names 0.0002, "true" names true); None when none does."""
    if c in var.choices:
        return c
    return next((v for v in var.choices
                 if str(v) == str(c) or (isinstance(v, bool) and str(v).lower() == str(c).lower())
                 or (not isinstance(v, (bool, str)) and _number(c) == v)), None)


def _number(c: Any) -> float | None:
    """Key ``c`` read as a number (None when it is not one)."""
    try:
        return None if isinstance(c, bool) else float(c)
    except (TypeError, ValueError):
        return None


def _toml_key(choice: Any) -> str:
    """A choice as a quoted TOML key, the form a weights table names it by."""
    return '"' + (str(choice).lower() if isinstance(choice, bool) else str(choice)) + '"'


def _categorical(var) -> bool:
    return getattr(var, "choices", None) is not None


def unit_dimension(var) -> _Normal | _Cells:
    """The prior of one variable (which has one) in its unit coordinate: the variable's own
    ``to_unit`` is linear in the value (in its logarithm for a log variable), so it carries
    the mode and one spread over; an integer's cells are in it already."""
    pr = var.prior
    if _categorical(var):
        return _Cells(choice_probs(var))
    mu = var.to_unit(pr.mode)
    one_spread = pr.mode * 10 ** pr.spread if var.log else pr.mode + pr.spread  # a spread in decades
    return _Normal(mu, var.to_unit(one_spread) - mu)


def choice_probs(var) -> tuple[float, ...]:
    """A categorical's prior probability of each of its choices, in order: the listed weights,
    the unlisted choices sharing what is left of 1 (or a small floor), normalised."""
    listed = {_choice(var, c): float(w) for c, w in var.prior.weights}
    rest = [c for c in var.choices if c not in listed]
    total = sum(listed.values())
    share = max(1.0 - total, _FLOOR * total) / len(rest) if rest else 0.0
    p = [listed.get(c, share) for c in var.choices]
    return tuple(q / sum(p) for q in p)


def mixed_log_pdf(lp, floor: float):
    """log((1 - floor) pi + floor) from log pi (``lp``, a numpy array or a torch tensor): the
    prior mixed with the uniform density, which is 1 on the cube; ``lp`` itself at floor 0."""
    if floor <= 0:
        return lp
    if type(lp).__module__.startswith("torch"):
        import torch

        return torch.logaddexp(lp + math.log1p(-floor), torch.full_like(lp, math.log(floor)))
    return np.logaddexp(lp + math.log1p(-floor), math.log(floor))


class UnitPrior:
    """The variables' priors over [0, 1]^d: ``dims[j]`` is dimension j's, None: uniform."""

    def __init__(self, dims: list[_Normal | _Cells | None], active=None):
        self.dims = list(dims)
        #: X (n, d) -> (n, d) bool, which variables each point's configuration has (conditional
        #: spaces: an inactive variable's coordinate is a stand-in, no evidence about its prior);
        #: None: all of them
        self.active = active

    @classmethod
    def from_space(cls, space) -> "UnitPrior | None":
        """The priors of a ``llmhpo.space.SearchSpace`` on the unit cube; None when no variable has one."""
        dims = [None if getattr(v, "prior", None) is None else unit_dimension(v) for v in space.variables]
        if not any(d is not None for d in dims):
            return None
        if not getattr(space, "conditional", False):
            return cls(dims)

        def active(X: np.ndarray) -> np.ndarray:
            return np.array([[v.name in p for v in space.variables] for p in map(space.decode, X)],
                            dtype=bool).reshape(len(X), len(dims))

        return cls(dims, active)

    @property
    def dim(self) -> int:
        return len(self.dims)

    def log_pdf(self, X):
        """X: (n, d) points of [0, 1]^d (numpy or torch) -> (n,) log density on the cube."""
        total = 0 * X[:, 0]
        for j, d in enumerate(self.dims):
            if d is not None:
                total = total + d.log_pdf(X[:, j])
        return total

    def from_uniform(self, U: np.ndarray) -> np.ndarray:
        """U: (n, d) uniform points of [0, 1]^d -> (n, d) points distributed as the prior
        (each coordinate through its inverse CDF: a stratified U stays stratified)."""
        U = np.asarray(U, dtype=float)
        if U.ndim != 2 or U.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (n, {self.dim}), got {U.shape}")
        X = U.copy()
        for j, d in enumerate(self.dims):
            if d is not None:
                X[:, j] = d.ppf(U[:, j])
        return X

    def without(self, drop) -> "UnitPrior | None":
        """The prior with dimensions ``drop`` (indices) made uniform; None when none is left."""
        dims = [None if j in set(drop) else d for j, d in enumerate(self.dims)]
        return UnitPrior(dims, self.active) if any(d is not None for d in dims) else None

    def contradicted(self, X, best, floor: float = 0.1, active=None) -> list[int]:
        """The dimensions whose prior the best results so far contradict. X: (n, d) points
        evaluated, ``best``: (n,) bool, the best of them (or (n, d): per dimension). Dimension j
        is contradicted when the best points are, on average, less likely under its prior than under the uniform: the
        mean over them of log((1 - floor) pi_j(x_j) + floor) is below 0 (the uniform density
        on [0, 1] is 1). The likelihood of the best configurations under the prior against
        another density is how PriorBand (Mallik et al. 2023) weighs a prior against evidence;
        here it decides, per variable, whether the prior still guides the search. A belief the
        search has not tested yet is not contradicted: a dimension counts only once two of the
        points lie where its prior is denser than the uniform (a narrow prior is not refuted by
        a uniform start that missed it). In a conditional space only the points where a variable
        is active count for or against its prior (``active``: (n, d) bool, ``self.active(X)``
        when not given)."""
        X = np.asarray(X, dtype=float).reshape(-1, self.dim)
        if not len(X):
            return []
        best = np.broadcast_to(np.asarray(best, dtype=bool).reshape(len(X), -1), X.shape)
        if active is None:
            active = np.ones(X.shape, dtype=bool) if self.active is None else self.active(X)
        out = []
        for j, d in enumerate(self.dims):
            chosen = best[:, j] & active[:, j]
            if d is None or not chosen.any():
                continue
            if int((np.asarray(d.log_pdf(X[active[:, j], j]), dtype=float) > 0).sum()) < 2:
                continue  # its region not tried yet
            lp = np.asarray(d.log_pdf(X[chosen, j]), dtype=float)
            if float(mixed_log_pdf(lp, floor).mean()) < 0:
                out.append(j)
        return out

    def supported(self, X, y, floor: float = 0.1) -> "UnitPrior | None":
        """The prior on the variables that the best results so far do not contradict
        (``contradicted``): X (n, d) points evaluated, y (n,) their values (minimised); the best
        are the best fifth (at least one) of those better than the median (in a conditional
        space, per variable, of the results where it is active). A wrong belief about
        one variable stops weighing once the search has found better values away from it, a
        right one on another keeps guiding. When every value ties, the prior is set aside once
        its region has been tried (two results where it is denser than the uniform): a flat
        start says nothing for it, and a confident prior on a region where nothing changes would
        otherwise keep every proposal there, a model being as flat as its data. Fewer than two
        results: the whole prior. None when no variable's prior is left."""
        y = np.asarray(y, dtype=float).reshape(-1)
        if len(y) < 2:
            return self
        X = np.asarray(X, dtype=float).reshape(len(y), self.dim)
        best = _best(y, np.ones(len(y), dtype=bool))
        if not best.any():
            return None if int((np.asarray(self.log_pdf(X)) > 0).sum()) >= 2 else self
        act = None
        if self.active is not None:  # a variable's best: among the results that have it
            act = self.active(X)
            best = np.column_stack([_best(y, act[:, j]) for j in range(self.dim)])
        drop = self.contradicted(X, best, floor, act)
        return self.without(drop) if drop else self


def _best(y: np.ndarray, among: np.ndarray) -> np.ndarray:
    """(n,) bool: the best fifth (at least one) of the values ``among`` selects that are
    better (lower) than their median."""
    out = np.zeros(len(y), dtype=bool)
    idx = np.flatnonzero(among)
    if len(idx):
        top = idx[np.argsort(y[idx], kind="stable")[: -(-len(idx) // 5)]]
        out[top] = y[top] < np.median(y[idx])
    return out
