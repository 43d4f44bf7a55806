"""Fractal Decomposition Algorithm (Nakib, Ouchraa, Shvai, Souquet & Talbi 2017,
"Deterministic metaheuristic based on fractal decomposition for large-scale optimization").

The box is covered by a hypersphere (centre C, radius R); a hypersphere is decomposed into
2d sub-hyperspheres with centres C +- (R - r) e_i, r = R / (1 + sqrt 2), inflated by
``alpha`` (1.75 in the paper) so that they cover their parent. Sub-hyperspheres are scored
at their centre (one evaluation each: the paper's quality measure spends more, we keep the
budget for depth) and the best one is decomposed in turn, down to the fractal depth
``k_max`` (5). At the deepest level an intensive local search (the paper's ILS) steps from
the sphere's centre along each axis by +- omega, moving on improvement and halving omega
otherwise, until omega < ``omega_min``. Then the search backtracks to the next best sphere
of the deepest level that still has some (depth-first). All centres of one decomposition,
and all 2d points of one ILS step, are independent evaluations.

No point is evaluated twice: a centre clipped onto the box's wall, or an ILS step back to a
visited point, takes the value already known (``SweepOptimizer``). Once the whole tree is
explored, the search goes on with the points of an unscrambled Halton sequence: still
deterministic, so the sequence does not depend on the seed.
"""

from __future__ import annotations

import math

import numpy as np

from llmhpo.optimizers.partition.tree import SweepOptimizer


class FractalDecomposition(SweepOptimizer):
    name = "fda"
    stochastic = False
    _state_attrs = SweepOptimizer._state_attrs + ("levels", "phase", "ils", "batch_values", "n_halton")

    def __init__(self, dim, rng=None, budget=None, k_max: int = 5, alpha: float = 1.75, omega_min: float = 1e-3):
        super().__init__(dim, rng, budget)
        if k_max < 1 or alpha < 1 or omega_min <= 0:
            raise ValueError("need k_max >= 1, alpha >= 1 and omega_min > 0")
        self.k_max, self.alpha, self.omega_min = k_max, alpha, omega_min
        # levels[k]: the sub-hyperspheres of depth k+1 being explored, best first;
        # each {"c": centre, "r": radius, "f": value, "done": bool}
        self.levels: list[list[dict]] = []
        self.phase = "start"
        self.ils: dict | None = None  # {"x", "f", "omega", "sphere"}
        self.batch_values: list = []  # [x, value] of the running batch
        self.n_halton = 0  # Halton points used once the tree is explored

    def _children(self, c: np.ndarray, R: float) -> list[dict]:
        r = R / (1 + math.sqrt(2))
        out = []
        for i in range(self.dim):
            for sign in (1.0, -1.0):
                x = np.asarray(c, dtype=float).copy()
                x[i] += sign * (R - r)
                out.append({"c": np.clip(x, 0, 1), "r": self.alpha * r, "f": None, "done": False})
        return out

    def _decompose(self, c, R):
        self.phase = "decompose"
        self.levels.append(self._children(c, R))
        return [(s["c"], {"phase": "decompose", "depth": len(self.levels), "sphere": k})
                for k, s in enumerate(self.levels[-1])]

    def _ils_batch(self):
        out = []
        for i in range(self.dim):
            for sign in (1.0, -1.0):
                x = np.asarray(self.ils["x"], dtype=float).copy()
                x[i] = min(max(x[i] + sign * self.ils["omega"], 0.0), 1.0)
                if not np.allclose(x, self.ils["x"]):
                    out.append((x, {"phase": "ils", "depth": len(self.levels), "omega": self.ils["omega"]}))
        return out

    def _start_ils(self, k: int):
        sphere = self.levels[-1][k]
        self.phase = "ils"
        self.ils = {"x": np.asarray(sphere["c"]), "f": sphere["f"], "omega": float(sphere["r"]), "sphere": k}
        return self._ils_batch()

    def _next_batch(self):
        results, self.batch_values = self.batch_values, []
        if self.phase == "start":
            return self._decompose(np.full(self.dim, 0.5), 0.5)
        if self.phase == "decompose":
            for _, f, k in results:
                self.levels[-1][k]["f"] = math.inf if f is None else f
            self.levels[-1].sort(key=lambda s: s["f"])
            return self._descend()
        if self.phase == "ils":
            ok = [(f, x) for x, f, _ in results if f is not None]
            best = min(ok, key=lambda t: t[0], default=None)
            if best is not None and best[0] < self.ils["f"]:
                self.ils["f"], self.ils["x"] = best[0], np.asarray(best[1])
            else:
                self.ils["omega"] /= 2
            if self.ils["omega"] >= self.omega_min:
                batch = self._ils_batch()
                if batch:
                    return batch
            self.levels[-1][self.ils["sphere"]]["done"] = True
            return self._descend()
        return self._halton()

    def _halton(self):
        """The next point of an unscrambled Halton sequence (deterministic)."""
        from scipy.stats import qmc

        engine = qmc.Halton(d=self.dim, scramble=False)
        engine.fast_forward(self.n_halton + 1)  # skip the origin
        self.n_halton += 1
        return [(engine.random(1)[0], {"phase": "exhausted", "halton": self.n_halton})]

    def _descend(self):
        """Go to the best unexplored sphere of the deepest level that has one (backtracking)."""
        while self.levels:
            todo = [k for k, s in enumerate(self.levels[-1]) if not s["done"]]
            if not todo:
                self.levels.pop()
                continue
            sphere = self.levels[-1][todo[0]]
            if len(self.levels) >= self.k_max:
                return self._start_ils(todo[0])
            sphere["done"] = True
            return self._decompose(sphere["c"], sphere["r"])
        self.phase = "exhausted"
        return self._halton()

    def _record(self, candidate, value):
        self.batch_values.append([candidate.x, value, candidate.info.get("sphere")])
