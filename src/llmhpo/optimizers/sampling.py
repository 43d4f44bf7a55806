"""Exploratory samplers (report 2.2.4): random, grid, Latin hypercube and Sobol sequences.

scipy.stats (qmc), slow to import, is imported when a design is first drawn."""

from __future__ import annotations

import warnings

import numpy as np

from llmhpo.optimizers.base import Optimizer


class RandomSearch(Optimizer):
    """Independent points of [0, 1]^d, uniform or drawn from the variables' priors."""

    name = "random"
    multi_objective = True  # its points do not depend on the values

    def _ask(self, n):
        return [(self.from_prior(self.rng.random(self.dim)), {}) for _ in range(n)]


class GridSearch(Optimizer):
    """The cell centres of a regular grid, visited in a seeded random order.

    levels: points per dimension (an int, or one int per dimension); in a study a categorical
    takes each of its choices and an integer at most its count of values
    (``fit_options``). A random order means a grid cut short by the budget
    still covers the whole box. A cell whose configuration was asked already (rounded integers,
    an inactive variable) is skipped; once every cell is, ``ask`` returns nothing. Priors are
    ignored: a grid covers the box evenly by design.
    """

    name = "grid"
    uses_prior = False  # its cells are the grid's
    multi_objective = True  # its points do not depend on the values
    _state_attrs = ("order", "index")
    max_points = 10_000_000

    def __init__(self, dim, rng=None, budget=None, levels: int | list[int] = 5, shuffle: bool = True):
        super().__init__(dim, rng, budget)
        lv = [levels] * dim if isinstance(levels, int) else list(levels)
        if len(lv) != dim or any((not isinstance(v, int)) or v < 1 for v in lv):
            raise ValueError(f"levels must be a positive int, or a list of one per variable ({dim}), got {levels!r}")
        total = int(np.prod(lv, dtype=float))
        if total > self.max_points:
            raise ValueError(f"a grid of {total} points is too large; lower levels (now {levels})")
        self.levels = lv
        self.order = self.rng.permutation(total) if shuffle else np.arange(total)
        self.index = 0

    @classmethod
    def fit_options(cls, options, space):
        """``levels`` per variable: a categorical takes each of its choices and an integer at
        most its count of values, so the grid covers every choice and asks no configuration twice."""
        from llmhpo.space import Categorical, Int

        options = dict(options)
        levels = options.get("levels", cls.options()["levels"])
        if isinstance(levels, int) and not isinstance(levels, bool):
            levels = [levels] * space.dim
        if not isinstance(levels, (list, tuple)) or len(levels) != space.dim:
            return options  # the constructor says what is wrong
        fitted = [len(v.choices) if isinstance(v, Categorical)
                  else min(k, v.high - v.low + 1) if isinstance(v, Int) and isinstance(k, int) else k
                  for v, k in zip(space, levels)]
        return {**options, "levels": fitted}

    def _ask(self, n):
        out = []
        while len(out) < n and self.index < len(self.order):
            cell = np.unravel_index(int(self.order[self.index]), self.levels)
            self.index += 1
            x = self.snap_point((np.asarray(cell) + 0.5) / np.asarray(self.levels))
            if self.is_known(x, [p for p, _ in out]):  # a cell of a configuration already asked
                continue  # (ints, choices, inactive variables): skipped, not moved off the grid
            out.append((x, {"grid_index": int(self.order[self.index - 1])}))
        return out


class LatinHypercube(Optimizer):
    """Blocks of Latin-hypercube designs (scipy.stats.qmc); each block is stratified.

    size: points per block; default the budget, or 10 * d when it is unknown. With priors,
    the design goes through their inverse CDF: stratified in the priors' quantiles.
    """

    name = "lhs"
    multi_objective = True  # its points do not depend on the values
    _state_attrs = ("design", "index")

    def __init__(self, dim, rng=None, budget=None, size: int | None = None):
        super().__init__(dim, rng, budget)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be an integer >= 1 (points per block), got {size!r}")
        self.size = int(size or budget or 10 * dim)
        self.design = np.empty((0, dim))
        self.index = 0

    def _ask(self, n):
        out = []
        for _ in range(n):
            if self.index >= len(self.design):
                from scipy.stats import qmc

                self.design = qmc.LatinHypercube(d=self.dim, seed=self._seed()).random(self.size)
                self.index = 0
            out.append((self.from_prior(self.design[self.index].copy()), {}))
            self.index += 1
        return out


class Sobol(Optimizer):
    """A scrambled Sobol sequence (scipy.stats.qmc), seeded from the optimiser's stream; with
    priors, through their inverse CDF (low discrepancy in the priors' quantiles)."""

    name = "sobol"
    multi_objective = True  # its points do not depend on the values
    _state_attrs = ("sobol_seed", "drawn")

    def __init__(self, dim, rng=None, budget=None):
        super().__init__(dim, rng, budget)
        self.sobol_seed = self._seed()
        self.drawn = 0
        self._after_load()

    def _after_load(self):
        from scipy.stats import qmc

        self._engine = qmc.Sobol(d=self.dim, scramble=True, seed=self.sobol_seed)
        if self.drawn:
            self._engine.fast_forward(self.drawn)

    def _ask(self, n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # balance warning for n not a power of 2
            pts = self._engine.random(n)
        self.drawn += n
        return [(self.from_prior(p), {"sobol_index": self.drawn - n + i}) for i, p in enumerate(pts)]
