"""Every optimiser, on an integer space where 30% of the configurations fail: no
configuration is proposed twice (failed ones included), and BO still finds the optimum."""

import numpy as np
import pytest

from llmhpo.optimizers import OPTIMIZERS, make_optimizer
from llmhpo.space import Int, SearchSpace

SPACE = SearchSpace([Int("a", 0, 9), Int("b", 0, 9)])  # 100 configurations
FAST = {"bo": {"n_init": 4, "num_restarts": 2, "raw_samples": 64}}


def objective(p):
    """Minimum 0 at a = 6, b = 3; a <= 2 fails (diverges): 30% of the configurations."""
    if p["a"] <= 2:
        return None
    return float((p["a"] - 6) ** 2 + (p["b"] - 3) ** 2)


def run(name, n, seed=0, batch=1):
    opt = make_optimizer(name, SPACE.dim, np.random.default_rng(seed), n, FAST.get(name), snap=SPACE.snap)
    configs = []
    while len(configs) < n:
        cands = opt.ask(batch)
        assert cands, f"{name} proposed nothing with nothing pending"
        for c in cands:
            np.testing.assert_allclose(c.x, SPACE.snap(c.x), atol=1e-12)  # the model sees what is evaluated
            p = SPACE.decode(c.x)
            configs.append((p["a"], p["b"]))
            opt.tell(c, objective(p))
    return opt, configs


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_no_configuration_twice_with_failures(name):
    n = 16 if name in ("bo", "bamsoo", "optuna_gp") else 24 if name == "grid" else 40  # grid: 25 points
    opt, configs = run(name, n, batch=2)
    assert len(set(configs)) == len(configs), f"{name} proposed a configuration twice: {configs}"
    failed = [c for c in configs if c[0] <= 2]
    assert len(failed) < len(configs), f"{name} only proposed failing configurations"


def test_bo_learns_the_failure_region_and_finds_the_optimum():
    opt, configs = run("bo", 20, seed=1)
    assert (6, 3) in configs, configs
    after_design = configs[4:]
    assert sum(c[0] <= 2 for c in after_design) <= 3, configs  # few model proposals in the failing region


def test_bo_does_not_repeat_a_failed_continuous_point():
    """The issue's report: after tell(cand, None), BO proposed the same point again and again."""
    opt = make_optimizer("bo", 2, np.random.default_rng(0), 30, FAST["bo"])
    X = []
    for _ in range(14):
        (c,) = opt.ask(1)
        X.append(c.x.copy())
        opt.tell(c, None if c.x[0] > 0.5 else float(np.sum((c.x - 0.3) ** 2)))
    X = np.array(X)
    d = np.max(np.abs(X[:, None] - X[None]), axis=-1) + np.eye(len(X))
    assert d.min() > 1e-6
