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


def test_soo_asked_for_more_than_its_first_sweep_splits_ahead_breadth_first():
    """Eight free workers at the start: the root, its two outer children (the root is split
    whatever its value), then the depth-1 boxes split ahead of their values, breadth first;
    a middle child gets its parent's value when it comes, and the sweeps go on from there."""
    f = get_function("branin")
    soo = SOO(2, K=3)
    first = soo.ask(8)
    assert len(first) == 8
    pts = np.array([c.x for c in first])
    assert len({tuple(np.round(p, 9)) for p in pts}) == 8
    assert [c.info["depth"] for c in first] == [0, 1, 1, 2, 2, 2, 2, 2]
    for c in first:
        soo.tell(c, f(f.from_unit(c.x)))
    # every node has a value but the one split-ahead point still queued: the middle
    # children inherited theirs when it came
    assert [nd["id"] for nd in soo.nodes if nd["value"] is None] == [info["node"] for _, info in soo.queue]
    assert len(soo.queue) == 1
    root = soo.nodes[0]
    middle = [nd for nd in soo.nodes if nd["parent"] == 0 and nd.get("inherits")]
    assert len(middle) == 1 and middle[0]["value"] == root["value"]
    nxt = soo.ask(8)
    assert nxt and all(c.info["depth"] >= 2 for c in nxt)  # SOO's own sweeps again
    run_budget(soo, f, 40)
    assert len(soo.y) >= 40 and min(soo.y) < 1.0


def test_soo_with_one_worker_never_splits_ahead():
    soo = SOO(2, K=3)
    f = get_function("branin")
    for _ in range(30):
        (c,) = soo.ask(1)
        assert soo.outstanding == 1
        # only the root is split before its value (the first sweep splits it whatever it is)
        assert all(nd["value"] is not None for nd in soo.nodes[1:] if nd["expanded"])
        soo.tell(c, f(f.from_unit(c.x)))
    queued = {info["node"] for _, info in soo.queue}
    assert all(nd["value"] is not None for nd in soo.nodes if nd["id"] not in queued)
    assert soo.t == sum(nd["expanded"] for nd in soo.nodes)


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


def _median_regret(name, fn, seeds, budget=30):
    """Median best regret over seeds, each seed on its own shifted copy of the function (the
    bench's protocol: the partition methods' first point, the centre, is not the optimum)."""
    regrets = []
    for s in seeds:
        f = get_function(fn).shifted(s)
        opt = make_optimizer(name, f.dim, np.random.default_rng(s), budget)
        regrets.append(run_budget(opt, f, budget) - f.f_min)
    return statistics.median(regrets)


SEEDS = range(5)
_RANDOM: dict = {}


def random_median(fn):
    if fn not in _RANDOM:
        _RANDOM[fn] = _median_regret("random", fn, SEEDS)
    return _RANDOM[fn]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bo", "soo", "bamsoo", "direct", "fda", "optuna_tpe"])
def test_model_and_partition_optimizers_beat_random(name):
    """Median regret over 5 shifted seeds after 30 evaluations, below random search's on at
    least two of branin, himmelblau, hartmann6. BO must beat it tenfold (measured: 1e-4,
    1e-3 and 0.04 of random's): a BO whose model or acquisition is broken proposes
    near-random points and fails. The full comparison, Optuna's GPSampler included, is
    docs/benchmarks.md."""
    factor = MARGIN.get(name, 1.0)
    wins = []
    for fn in ["branin", "himmelblau", "hartmann6"]:
        if len(wins) >= 2 and sum(wins) >= 2:
            break  # two wins already: spare the 6-D runs
        wins.append(_median_regret(name, fn, SEEDS) < factor * random_median(fn))
    assert sum(wins) >= 2, wins


#: how much lower than random search's median regret an optimiser's must be
MARGIN = {"bo": 0.1}


def test_direct_divides_every_potentially_optimal_rectangle_ties_included():
    """A hand-made set of rectangles (JPS 1993, Def. 3.1): sizes d = 0.5 (level 0), 0.5/3
    (level 1 on both sides) and 0.5/9. The two largest rectangles tie at the lowest value of
    their size (2.0): both are potentially optimal and both are divided; the smallest one
    with the overall minimum (1.0) is too; a rectangle beaten at its own size is not."""
    d = DIRECT(2)
    lv = lambda k: np.array([k, k])  # noqa: E731
    d.rects = [
        {"c": np.array([0.1, 0.1]), "l": lv(0), "f": 2.0},   # largest, ties with the next
        {"c": np.array([0.9, 0.9]), "l": lv(0), "f": 2.0},
        {"c": np.array([0.5, 0.5]), "l": lv(0), "f": 3.0},   # same size, worse: no
        {"c": np.array([0.3, 0.3]), "l": lv(1), "f": 2.5},   # middle size, above the hull: no
        {"c": np.array([0.4, 0.4]), "l": lv(2), "f": 1.0},   # smallest, f_min: yes
    ]
    assert sorted(d.potentially_optimal()) == [0, 1, 4]
    # with the tie broken, only one of the two large rectangles is chosen
    d.rects[1]["f"] = 2.0 + 1e-9
    assert sorted(d.potentially_optimal()) == [0, 4]


def test_direct_ties_on_a_symmetric_function_are_all_divided():
    """f(x) = (x1 - 1/2)^2 + (x2 - 1/2)^2: after the centre, the four samples c +- 1/3 e_i tie
    (1/9). After the first division the rectangles of the two outer thirds along the second
    dimension tie at the largest size: both are divided in iteration 2, so its samples come
    in pairs placed symmetrically about the centre."""
    f = lambda x: float(np.sum((np.asarray(x) - 0.5) ** 2))  # noqa: E731
    d = DIRECT(2)
    for _ in range(1 + 4):
        (c,) = d.ask(1)
        d.tell(c, f(c.x))
    cands = d.ask(100)  # all of iteration 2
    pts = sorted(tuple(np.round(c.x, 9)) for c in cands)
    mirrored = sorted(tuple(np.round(1.0 - np.array(p), 9)) for p in pts)
    assert pts == mirrored and len(pts) >= 4, pts


def test_soo_depth_limit_counts_expansions():
    """f(x) = x on [0, 1], K = 3, h_max(t) = floor(sqrt(t)) with t the expansions so far
    (Munos 2011, Alg. 2). Worked out by hand:
    sweep 1 (t = 0, h_max 1): expand the root -> 1/6, 5/6 (1/2 inherited); t = 1
    sweep 2 (t = 1, h_max 1): depth 1 best leaf [0, 1/3] -> 1/18, 5/18; t = 2
    sweep 3 (t = 2, h_max 1): depth 1 only (depth 2 is beyond h_max): [1/3, 2/3] -> 7/18, 11/18; t = 3
    sweep 4 (t = 3, h_max 1): depth 1: [2/3, 1] -> 13/18, 17/18; t = 4
    sweep 5 (t = 4, h_max 2): depth 2: best leaf [0, 1/9] (1/18) -> 1/54, 5/54; t = 5.
    Counting evaluations instead (h_max(5) = 2 after sweep 2) would expand [0, 1/9] in sweep 3."""
    soo = SOO(1, K=3)
    seen = []
    for _ in range(11):
        (c,) = soo.ask(1)
        seen.append(round(float(c.x[0]) * 54))  # in 54ths
        soo.tell(c, float(c.x[0]))
    assert seen == [27, 9, 45, 3, 15, 21, 33, 39, 51, 1, 5]
    assert soo.t == 5 and soo.h_max() == 2
    assert soo.t == sum(nd["expanded"] for nd in soo.nodes)


@pytest.mark.parametrize("name", ["branin", "himmelblau", "hartmann6", "rosenbrock", "ackley", "rastrigin", "levy",
                                  "styblinski_tang"])
def test_bamsoo_bookkeeping_stays_bounded(name):
    """BaMSOO's tree grows at most linearly with the real evaluations on every function of
    the suite (shifted, as in the bench)."""
    f = get_function(name).shifted(0)
    bam = BaMSOO(f.dim)
    run_budget(bam, f, 30)
    assert len(bam.nodes) <= BaMSOO.max_nodes_per_eval * 30 + 3 * 10 * f.dim, len(bam.nodes)


def test_fda_never_evaluates_a_point_twice_and_is_deterministic():
    from llmhpo.optimizers.partition import FractalDecomposition

    f = get_function("branin")
    runs = []
    for seed in (0, 1):
        fda = FractalDecomposition(2, np.random.default_rng(seed), k_max=1, omega_min=0.1)
        run_budget(fda, f, 60)  # past the end of the tree (44 evaluations): the Halton tail
        X = np.array(fda.X)
        d = np.max(np.abs(X[:, None] - X[None]), axis=-1) + np.eye(len(X))
        assert d.min() > 1e-9
        assert fda.phase == "exhausted"
        runs.append(X)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_soo_without_depth_limit_goes_deeper_and_bad_limits_are_refused():
    """h_max = "none" (the report's SOO) expands the best leaf at every depth, so on f(x) = x it
    dives to the minimum faster than the sqrt(t) limit allows; "sqrt" is the default."""
    def depth_after(soo, n):
        for _ in range(n):
            (c,) = soo.ask(1)
            soo.tell(c, float(c.x[0]))
        return soo.depth, min(soo.y)

    d_sqrt, best_sqrt = depth_after(SOO(1, K=3), 20)
    d_none, best_none = depth_after(SOO(1, K=3, h_max="none"), 20)
    assert SOO(1).h_max_fixed == "sqrt"
    assert d_none > d_sqrt and best_none < best_sqrt, (d_sqrt, d_none, best_sqrt, best_none)
    for bad in ("deep", 0, True, 1.5):
        with pytest.raises(ValueError, match="h_max"):
            SOO(1, h_max=bad)
