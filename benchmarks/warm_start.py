"""Warm starts from an earlier study (``[warm_start] from``): bo with use = "data", use = "design"
and none, on a shifted benchmark function, the earlier study being 30 random trials of

- "related": the same problem (seed s) with its optimum moved by 0.05 (unit coordinates) and
  its values 3 f + 10 (another scale: another dataset or seed of the same fine-tuning task);
- "unrelated": the function shifted by seed s + 1 (its optimum elsewhere, axes permuted).

The optimiser API is driven as the run loop drives it: ``Transfer.prime`` before the first
ask, use = "design"'s configurations registered first. Prints the median best regret after
5, 10, 15 and 25 evaluations over the seeds.

    OMP_NUM_THREADS=1 python benchmarks/warm_start.py branin related 3 none,data,design
"""

import sys
import time

import numpy as np

from llmhpo.objectives.functions import get_function
from llmhpo.optimizers import make_optimizer
from llmhpo.transfer import Source, Transfer


def source(fn: str, seed: int, kind: str, n: int = 30) -> Source:
    f = get_function(fn).shifted(seed + 1 if kind == "unrelated" else seed)
    rng = np.random.default_rng(1000 + seed)
    delta = rng.normal(size=f.dim)
    delta = 0.05 * delta / np.linalg.norm(delta)
    U = rng.random((n, f.dim))
    if kind == "unrelated":
        y = np.array([f(f.from_unit(u)) for u in U])
    else:
        y = np.array([3 * f(f.from_unit(np.clip(u - delta, 0, 1))) + 10 for u in U])
    return Source("earlier", U, y, list(range(n)), 0)


def run(fn: str, seed: int, mode: str, kind: str, budget: int = 25) -> np.ndarray:
    """(budget,) best regret after each evaluation."""
    f = get_function(fn).shifted(seed)
    opt = make_optimizer("bo", f.dim, np.random.default_rng(seed), budget, {})
    queue = []
    if mode != "none":
        tr = Transfer(mode, [source(fn, seed, kind)])
        picks = tr.design(opt.n_init) if mode == "design" else []
        opt.set_prior(tr.groups() if mode == "data" else [], designed=len(picks))
        queue = [opt.register(x, {}) for x, _ in picks]
    values = []
    while len(values) < budget:
        c = queue.pop(0) if queue else opt.ask(1)[0]
        y = f(f.from_unit(c.x))
        opt.tell(c, y)
        values.append(y)
    return np.minimum.accumulate(np.array(values)) - f.f_min


if __name__ == "__main__":
    fn, kind, seeds = sys.argv[1], sys.argv[2], range(int(sys.argv[3]))
    for mode in (sys.argv[4] if len(sys.argv) > 4 else "none,data,design").split(","):
        t = time.time()
        r = np.array([run(fn, s, mode, kind) for s in seeds])
        print(f"{fn} {kind} {mode:6s} median regret @5 {np.median(r[:, 4]):.3g} @10 {np.median(r[:, 9]):.3g} "
              f"@15 {np.median(r[:, 14]):.3g} @25 {np.median(r[:, 24]):.3g} ({time.time() - t:.0f} s)", flush=True)
