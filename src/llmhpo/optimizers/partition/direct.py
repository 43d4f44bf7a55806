"""DIRECT (Jones, Perttunen & Stuckman 1993, "Lipschitzian optimization without the
Lipschitz constant"), the original, not locally biased, variant.

Hyper-rectangles of [0, 1]^d with side lengths 3^-l_i, each scored at its centre. An
iteration selects the potentially optimal rectangles: j is one if some K > 0 gives

    f_j - K d_j <= f_i - K d_i  for all i,   and   f_j - K d_j <= f_min - eps |f_min|   (JPS eq. 6-7)

with d the centre-to-vertex distance. Each is divided (JPS section 3.2): along every side
of maximal length, the points c +- delta e_i (delta = a third of that side) are sampled,
and the rectangle is trisected first along the dimension with the best
w_i = min(f(c + delta e_i), f(c - delta e_i)), so the best points sit in the largest boxes.
All samples of one iteration are independent evaluations; ``ask(n)`` hands them out.
"""

from __future__ import annotations

import math

import numpy as np

from llmhpo.optimizers.partition.tree import SweepOptimizer


class DIRECT(SweepOptimizer):
    name = "direct"
    stochastic = False
    _state_attrs = SweepOptimizer._state_attrs + ("rects", "dividing", "iterations")

    def __init__(self, dim, rng=None, budget=None, eps: float = 1e-4):
        super().__init__(dim, rng, budget)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.eps = eps
        # each rect: {"c": centre (d,), "l": levels (d,) ints, "f": value or None}
        self.rects: list[dict] = []
        # rectangles being divided this iteration: {"rect": index, "dims": [...], "samples": {key: [c, f]}}
        self.dividing: list[dict] = []
        self.iterations = 0

    @staticmethod
    def _size(levels) -> float:
        return 0.5 * float(np.linalg.norm(3.0 ** -np.asarray(levels, dtype=float)))

    def potentially_optimal(self) -> list[int]:
        """Indices of the potentially optimal rectangles (JPS Definition / Lemma 3.3)."""
        idx = [i for i, r in enumerate(self.rects) if r["f"] is not None and math.isfinite(r["f"])]
        if not idx:
            return []
        f = np.array([self.rects[i]["f"] for i in idx])
        d = np.array([self._size(self.rects[i]["l"]) for i in idx])
        f_min = float(f.min())
        # one representative per size: the lowest value; rectangles of that size with the
        # same value tie with it and are divided with it (Jones et al. 1993: "all" rectangles
        # that satisfy the conditions; scipy's DIRECT divides them too)
        sizes = np.round(d, 15)
        best_by_size: dict[float, int] = {}
        for k in np.lexsort((np.arange(len(idx)), f)):
            best_by_size.setdefault(float(sizes[k]), int(k))
        reps = sorted(best_by_size.values(), key=lambda k: d[k])
        chosen = []
        for a, k in enumerate(reps):
            smaller, larger = reps[:a], reps[a + 1:]
            K_low = max(((f[k] - f[i]) / (d[k] - d[i]) for i in smaller), default=0.0)
            K_high = min(((f[i] - f[k]) / (d[i] - d[k]) for i in larger), default=math.inf)
            if K_low > K_high + 1e-12:
                continue
            if math.isfinite(K_high) and f[k] - K_high * d[k] > f_min - self.eps * abs(f_min) + 1e-15:
                continue
            tie = np.abs(f - f[k]) <= 1e-12 * max(1.0, abs(f[k]))  # equal up to rounding
            chosen += [idx[i] for i in np.flatnonzero((sizes == sizes[k]) & tie)]
        return chosen

    def _next_batch(self):
        if not self.rects:
            self.rects.append({"c": np.full(self.dim, 0.5), "l": np.zeros(self.dim, dtype=int), "f": None})
            return [(self.rects[0]["c"], {"rect": 0, "iteration": 0})]
        self._finish_divisions()
        self.iterations += 1
        batch = []
        for j in self.potentially_optimal():
            r = self.rects[j]
            lv = np.asarray(r["l"])
            dims = [int(i) for i in np.flatnonzero(lv == lv.min())]
            delta = 3.0 ** -(lv.min() + 1)
            job = {"rect": j, "dims": dims, "samples": {}}
            for i in dims:
                for sign in (1, -1):
                    x = np.asarray(r["c"], dtype=float).copy()
                    x[i] += sign * delta
                    key = f"{i}{'+' if sign > 0 else '-'}"
                    job["samples"][key] = [x, None]
                    batch.append((x, {"rect": j, "sample": key, "iteration": self.iterations,
                                      "division": len(self.dividing)}))
            self.dividing.append(job)
        return batch

    def _record(self, candidate, value):
        info = candidate.info
        v = math.inf if value is None else value
        if "sample" not in info:
            self.rects[info["rect"]]["f"] = v
            return
        self.dividing[info["division"]]["samples"][info["sample"]][1] = v

    def _finish_divisions(self) -> None:
        """Trisect the rectangles whose samples are all in (JPS section 3.2)."""
        for job in self.dividing:
            r = self.rects[job["rect"]]
            s = job["samples"]
            w = {i: min(s[f"{i}+"][1], s[f"{i}-"][1]) for i in job["dims"]}
            levels = np.asarray(r["l"]).copy()
            for i in sorted(job["dims"], key=lambda i: (w[i], i)):
                levels[i] += 1
                for sign in "+-":
                    c, f = s[f"{i}{sign}"]
                    self.rects.append({"c": np.asarray(c), "l": levels.copy(), "f": f})
            r["l"] = levels
        self.dividing = []
