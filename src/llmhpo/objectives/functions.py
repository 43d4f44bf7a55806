"""Benchmark functions with known optima (Surjanovic & Bingham's virtual library),
to test and compare optimisers in seconds. All are minimised.

``Function.shifted(seed)`` is the benchmark's honest version of a function: the optimum is
moved to a random point of [0.1, 0.9]^d of the box (and, on a box with equal sides, the
axes are permuted at random), so that no optimiser meets the optimum by construction
(partition methods evaluate the centre first: ackley's and rastrigin's minima sit there) and
a deterministic optimiser gets a different problem for every seed. The known minimum value
is kept: each function's minimum is its minimum over all of R^d, and the moved function
is the original one read around a moved point.

A function may also compute other named values at the same point (``metrics``), which a
trial records: ``branin_currin`` is the two-objective problem of Belakaria et al. (2019)
(Branin rescaled to [0, 1]^2, and Currin's exponential function), both minimised, read as
the metrics ``branin`` and ``currin`` of ``[study] objectives``.

``lora_smollm2`` is no formula: a surrogate of recorded LoRA fine-tuning evaluations
(``llmhpo.objectives.recorded``), on the unit cube of the report's five-variable space, not moved
by seeds."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from llmhpo.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Function:
    """f: (d,) native point -> float; bounds: (d, 2); f_min: the known global minimum;
    x_opt: (d,) a native point where it is reached (None if not recorded)."""

    name: str
    f: Callable[[np.ndarray], float]
    bounds: np.ndarray
    f_min: float
    x_opt: np.ndarray | None = None
    #: other values at the same point, recorded as the trial's metrics: (name, (d,) -> float)
    metrics: tuple[tuple[str, Callable[[np.ndarray], float]], ...] = ()
    #: a recorded landscape (``lora_smollm2``): its axes mean something, so seeds do not move it
    fixed: bool = False
    #: its own learning curve (x, r, r_max) -> value for multi-fidelity, instead of the synthetic one
    curve: Callable[..., float] | None = None

    @property
    def dim(self) -> int:
        return len(self.bounds)

    def __call__(self, x) -> float:
        return float(self.f(np.asarray(x, dtype=float)))

    def from_unit(self, u) -> np.ndarray:
        """u: (d,) in [0, 1] -> native point."""
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        return lo + np.asarray(u, dtype=float) * (hi - lo)

    def to_unit(self, x) -> np.ndarray:
        """x: (d,) native point -> (d,) point of the unit box (outside [0, 1] if x is)."""
        lo, hi = self.bounds[:, 0], self.bounds[:, 1]
        return (np.asarray(x, dtype=float) - lo) / (hi - lo)

    def shifted(self, seed: int, margin: float = 0.1) -> "Function":
        """The function with its minimiser moved to a random point of [margin, 1 - margin]^d
        (unit coordinates) and, if every side of the box is the same, its axes permuted:

            g(u) = f(u_old + P (u - u_new))     (u in unit coordinates)

        so g(u_new) = f(u_old) = f_min. Same seed, same problem (the name enters the seed, so
        two functions with one seed get independent shifts)."""
        if self.fixed:
            return self
        if self.x_opt is None:
            raise ValueError(f"function '{self.name}' has no recorded minimiser to move")
        rng = np.random.default_rng([zlib.crc32(self.name.encode()), int(seed)])
        d = self.dim
        u_old = self.to_unit(self.x_opt)
        u_new = rng.uniform(margin, 1.0 - margin, d)
        widths = self.bounds[:, 1] - self.bounds[:, 0]
        perm = rng.permutation(d) if np.allclose(widths, widths[0]) and np.allclose(self.bounds, self.bounds[0]) \
            else np.arange(d)
        lo, width = self.bounds[:, 0].copy(), widths.copy()

        def moved(f):
            def g(x):
                v = (np.asarray(x, dtype=float) - lo) / width - u_new  # displacement from the new optimum
                return f(lo + (u_old + v[perm]) * width)
            return g

        return Function(self.name, moved(self.f), self.bounds.copy(), self.f_min, lo + u_new * width,
                        tuple((k, moved(f)) for k, f in self.metrics))


def _himmelblau(x):
    return (x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2


def _branin(x):
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def _hartmann6(x):
    return -float(_H6_ALPHA @ np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1)))


def _rosenbrock(x):
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


def _ackley(x):
    d = len(x)
    return float(-20 * np.exp(-0.2 * np.sqrt(np.sum(x**2) / d)) - np.exp(np.sum(np.cos(2 * np.pi * x)) / d) + 20 + math.e)


def _rastrigin(x):
    return float(10 * len(x) + np.sum(x**2 - 10 * np.cos(2 * np.pi * x)))


def _levy(x):
    w = 1 + (x - 1) / 4
    head = np.sin(np.pi * w[0]) ** 2
    mid = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(np.pi * w[:-1] + 1) ** 2))
    tail = (w[-1] - 1) ** 2 * (1 + np.sin(2 * np.pi * w[-1]) ** 2)
    return float(head + mid + tail)


def _styblinski_tang(x):
    return float(np.sum(x**4 - 16 * x**2 + 5 * x) / 2)


def _branin_unit(x):
    return _branin([15 * x[0] - 5, 15 * x[1]])


def _currin(x):
    # 1 - exp(-1 / (2 x1)) tends to 1 as x1 -> 0
    factor = 1.0 if x[1] <= 0 else 1 - math.exp(-1 / (2 * x[1]))
    return float(factor * (2300 * x[0] ** 3 + 1900 * x[0] ** 2 + 2092 * x[0] + 60)
                 / (100 * x[0] ** 3 + 500 * x[0] ** 2 + 4 * x[0] + 20))


def _box(lo, hi, d):
    return np.tile([lo, hi], (d, 1)).astype(float)


# name -> (maker(dim) -> Function, fixed dimension or None, default dimension)
_FUNCTIONS: dict[str, tuple[Callable[[int], Function], int | None, int]] = {
    "himmelblau": (lambda d: Function("himmelblau", _himmelblau, np.array([[-5.0, 5.0], [-5.0, 5.0]]), 0.0,
                                      np.array([3.0, 2.0])), 2, 2),
    "branin": (lambda d: Function("branin", _branin, np.array([[-5.0, 10.0], [0.0, 15.0]]), 0.397887357729738,
                                  np.array([math.pi, 2.275])), 2, 2),
    "hartmann6": (lambda d: Function("hartmann6", _hartmann6, _box(0, 1, 6), -3.32236801141551,
                                        np.array([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573])), 6, 6),
    "rosenbrock": (lambda d: Function("rosenbrock", _rosenbrock, _box(-5, 10, d), 0.0, np.ones(d)), None, 4),
    "ackley": (lambda d: Function("ackley", _ackley, _box(-32.768, 32.768, d), 0.0, np.zeros(d)), None, 4),
    "rastrigin": (lambda d: Function("rastrigin", _rastrigin, _box(-5.12, 5.12, d), 0.0, np.zeros(d)), None, 4),
    "levy": (lambda d: Function("levy", _levy, _box(-10, 10, d), 0.0, np.ones(d)), None, 4),
    "styblinski_tang": (lambda d: Function("styblinski_tang", _styblinski_tang, _box(-5, 5, d), -39.16616570377142 * d,
                                                np.full(d, -2.903534027771178)), None, 4),
    "branin_currin": (lambda d: Function("branin_currin", _branin_unit, _box(0, 1, 2), 0.397887357729738,
                                         np.array([(math.pi + 5) / 15, 2.275 / 15]),
                                         (("branin", _branin_unit), ("currin", _currin))), 2, 2),
}


def _recorded(d: int) -> Function:
    """``lora_smollm2`` on [0, 1]^5 (the paper space's unit cube), minimised as 1 - accuracy."""
    from llmhpo.objectives import recorded

    return Function("lora_smollm2", recorded.value, _box(0, 1, len(recorded.VARIABLES)), 1.0 - recorded.best_predicted(),
                    recorded.optimum(), fixed=True, curve=recorded.curve_value)


#: fitted on recorded evaluations when first used (``llmhpo.objectives.recorded``)
_RECORDED = {"lora_smollm2": (_recorded, 5, 5)}

#: the single-objective synthetic functions (``llmhpo bench`` all)
FUNCTION_NAMES = [n for n, (make, _, d) in _FUNCTIONS.items() if not make(d).metrics]
_FUNCTIONS.update(_RECORDED)


def any_dimension(name: str) -> bool:
    """Whether function ``name`` (a known one) is defined in any dimension (takes ``dim``)."""
    return _FUNCTIONS[name.replace("-", "_")][1] is None


def recorded(name: str) -> bool:
    """Whether function ``name`` is a recorded landscape (``Function.fixed``: seeds do not move it)."""
    return name.replace("-", "_") in _RECORDED


def check_rungs(name: str, r_min: float, r_max: float, where: str = "[fidelity] min") -> None:
    """ConfigError when a recorded landscape's learning curve cannot tell rungs apart: it holds
    the recorded schedule (steps 4, 8, 16) scaled onto [max / 4, max], so every rung below
    max / 4 would score as the rung at max / 4."""
    if recorded(name) and r_min < r_max / 4 - 1e-9:
        raise ConfigError(f"{where} = {r_min:g}: function '{name}' is recorded at 1/4, 1/2 and all of max "
                          f"(steps 4, 8, 16 of 16), so every rung below max / 4 = {r_max / 4:g} scores the same; "
                          "raise min to at least max / 4 (e.g. min = 4, max = 16, eta = 2)")


def get_function(name: str, dim: int | None = None) -> Function:
    """A benchmark function by name; ``dim`` for those defined in any dimension."""
    key = name.replace("-", "_")
    if key not in _FUNCTIONS:
        raise ConfigError(f"unknown function {name!r}{did_you_mean(name, _FUNCTIONS)}; "
                          f"choose one of: {', '.join(_FUNCTIONS)}")
    make, fixed, default = _FUNCTIONS[key]
    if dim is not None and fixed is not None and dim != fixed:
        raise ConfigError(f"function '{name}' is {fixed}-dimensional; remove dim = {dim} or set it to {fixed}")
    if dim is not None and (not isinstance(dim, int) or dim < 2):
        raise ConfigError(f"function '{name}': dim = {dim!r} must be an integer >= 2")
    return make(dim or fixed or default)
