"""Seconds per ask() of BO and SOO with 50 and 200 observations (hartmann6, d = 6).
usage: python benchmarks/ask_time.py"""

from __future__ import annotations

import json
import time

import numpy as np

from llmhpo.objectives.functions import get_function
from llmhpo.optimizers import make_optimizer


def ask_time(name: str, n_obs: int, q: int, repeats: int = 3) -> float:
    f = get_function("hartmann6")
    opt = make_optimizer(name, f.dim, np.random.default_rng(0), n_obs + 10)
    if name == "bo":  # observations straight into the history: only the ask is timed
        X = np.random.default_rng(1).random((n_obs, f.dim))
        for x in X:
            c = opt.register(x)
            opt.tell(c, f(f.from_unit(x)))
        opt.n_design_asked = opt.n_init
    else:
        while len(opt.y) < n_obs:
            for c in opt.ask(4):
                opt.tell(c, f(f.from_unit(c.x)))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        cands = opt.ask(q)
        times.append(time.perf_counter() - t)
        for c in cands:
            opt.tell(c, f(f.from_unit(c.x)))
    return float(np.median(times))


if __name__ == "__main__":
    rows = {f"{name} n={n} q={q}": round(ask_time(name, n, q), 4)
            for name in ("bo", "soo") for n in (50, 200) for q in (1, 4)}
    print(json.dumps(rows, indent=1))
