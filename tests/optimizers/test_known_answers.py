"""Algorithm tests against known answers: scipy's DIRECT, a SOO tree checked by hand,
BaMSOO's saved evaluations, and model/partition-based optimisers against random search."""

import math
import statistics

import numpy as np
import pytest
from scipy.optimize import direct as scipy_direct

from llmhpo.objectives.functions import get_function
from llmhpo.optimizers import make_optimizer
from llmhpo.optimizers.partition import DIRECT, SOO, BaMSOO


def run_budget(opt, f, n):
    """Sequential ask/tell for exactly n evaluations; returns the best value."""
    best = math.inf
    for _ in range(n):
        (c,) = opt.ask(1)
        v = f(f.from_unit(c.x))
        best = min(best, v)
        opt.tell(c, v)
    return best


@pytest.mark.parametrize("name", ["branin", "hartmann6"])
@pytest.mark.parametrize("maxfun", [50, 200])
def test_direct_matches_scipy(name, maxfun):
    f = get_function(name)
    ref = scipy_direct(f, [tuple(b) for b in f.bounds], maxfun=maxfun, locally_biased=False, eps=1e-4)
    ours = run_budget(DIRECT(f.dim), f, ref.nfev)  # equal evaluation budgets
    assert ours <= ref.fun + 1e-6 * abs(ref.fun), (ours, ref.fun, ref.nfev)


def test_direct_first_iterations_by_hand():
    f = get_function("branin")
    d = DIRECT(2)
    run_budget(d, f, 1 + 4)  # centre, then c +- 1/3 e_i on both dimensions
    xs = np.array(d.X)
    np.testing.assert_allclose(xs[0], [0.5, 0.5])
    np.testing.assert_allclose(sorted(map(tuple, xs[1:])), sorted([(5 / 6, .5), (1 / 6, .5), (.5, 5 / 6), (.5, 1 / 6)]))


def test_soo_tree_on_1d_by_hand():
    """f(x) = (x - 0.3)^2 on [0, 1], K = 3; the sweeps worked out on paper."""
    f = lambda x: (x[0] - 0.3) ** 2  # noqa: E731
    soo = SOO(1, K=3, h_max=10)
    seen = []
    for _ in range(7):
        (c,) = soo.ask(1)
        seen.append(round(float(c.x[0]), 6))
        soo.tell(c, f(c.x))
    # root centre; root split -> 1/6 and 5/6 (1/2 inherited); sweep 2 expands [0, 1/3]
    # (f(1/6) = .0178 < f(1/2) = .04) -> 1/18, 5/18; sweep 3: depth 1 best leaf is [1/3, 2/3]
    # (.04 beats 5/6) but .04 > v_max? no: v_max starts at inf at depth 1 -> expand [1/3, 2/3]
    # -> 7/18, 11/18; then depth 2 best leaf 5/18 (.0006) <= .04 -> expand [2/9, 1/3] -> 13/54, 17/54
    # (children of one sweep are created together, so the tree already has depth 3)
    assert seen[:5] == [0.5, round(1 / 6, 6), round(5 / 6, 6), round(1 / 18, 6), round(5 / 18, 6)]
    assert seen[5:7] == [round(7 / 18, 6), round(11 / 18, 6)]
    depths = sorted(nd["depth"] for nd in soo.nodes)
    assert depths == [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3]
    # sweep 3 expands both leaves at once: its four children are independent evaluations
    (c,) = soo.ask(1)
    assert round(float(c.x[0]), 6) == round(13 / 54, 6)
    (c2,) = soo.ask(1)
    assert round(float(c2.x[0]), 6) == round(17 / 54, 6)


def test_soo_middle_child_inherits_without_evaluation():
    soo = SOO(2, K=3)
    f = get_function("branin")
    run_budget(soo, f, 3)
    root = soo.nodes[0]
    middle = [nd for nd in soo.nodes if nd["parent"] == 0][1]
    np.testing.assert_allclose(middle["x"], root["x"])
    assert middle["value"] == root["value"]
    assert len(soo.y) == 3  # root + 2 outer children: the middle one cost nothing


def _evals_to_depth(opt, f, depth, cap=600):
    n = 0
    while opt.depth < depth and n < cap:
        cands = opt.ask(4)
        for c in cands:
            opt.tell(c, f(f.from_unit(c.x)))
            n += 1
    return n


@pytest.mark.parametrize("name", ["branin", "himmelblau", "hartmann6"])
def test_bamsoo_needs_fewer_evaluations_than_soo_for_same_depth(name):
    f = get_function(name)
    n_soo = _evals_to_depth(SOO(f.dim, h_max=10), f, 10)
    bam = BaMSOO(f.dim, h_max=10)
    n_bam = _evals_to_depth(bam, f, 10)
    assert bam.depth >= 10
    assert bam.n_skipped > 0
    assert n_bam < n_soo, (n_bam, n_soo)


def _median_regret(name, fn, seeds, budget=50):
    f = get_function(fn)
    regrets = []
    for s in seeds:
        opt = make_optimizer(name, f.dim, np.random.default_rng(s), budget)
        regrets.append(run_budget(opt, f, budget) - f.f_min)
    return statistics.median(regrets)


SEEDS = range(10)
_RANDOM: dict = {}


def random_median(fn):
    if fn not in _RANDOM:
        _RANDOM[fn] = _median_regret("random", fn, SEEDS)
    return _RANDOM[fn]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bo", "soo", "bamsoo", "direct", "fda", "optuna_tpe"])
def test_model_and_partition_optimizers_beat_random(name):
    """Optuna's GPSampler is compared in docs/benchmarks.md (15 s a run: too slow here)."""
    from llmhpo.optimizers import OPTIMIZERS

    wins = []
    for fn in ["branin", "himmelblau", "hartmann6"]:
        # deterministic optimisers give the same run for every seed: one run is the median
        seeds = SEEDS if OPTIMIZERS[name].stochastic else [0]
        if fn == "hartmann6" and len(wins) >= 2 and sum(wins) >= 2:
            break  # two wins already: spare the 6-D runs
        wins.append(_median_regret(name, fn, seeds) < random_median(fn))
    assert sum(wins) >= 2, wins
