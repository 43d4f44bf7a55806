"""Priors: their density and inverse CDF on the unit cube, the optimisers that use them
(sampling from them; piBO's weight that fades with evaluations), and their TOML keys."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from llmhpo.config import load_config
from llmhpo.errors import ConfigError
from llmhpo.objectives.functions import get_function
from llmhpo.optimizers import OPTIMIZERS, make_optimizer
from llmhpo.priors import Prior, UnitPrior
from llmhpo.space import Categorical, Float, Int, SearchSpace

ROOT = Path(__file__).resolve().parents[1]
LR = Float("learning_rate", 1e-6, 1e-2, log=True, prior=Prior(2e-4, 0.5))


def _unit(var) -> UnitPrior:
    return UnitPrior.from_space(SearchSpace([var]))


def test_the_density_peaks_at_the_mode_in_decades_and_integrates_to_one():
    up = _unit(LR)
    u = np.linspace(0, 1, 20001)[:, None]
    logp = up.log_pdf(u)
    assert LR.from_unit(u[np.argmax(logp), 0]) == pytest.approx(2e-4, rel=1e-3)
    # one decade off the mode is two spreads (0.5 decade): log density down by 2^2 / 2
    one_decade = np.array([[LR.to_unit(2e-3)], [LR.to_unit(2e-4)]])
    assert np.diff(up.log_pdf(one_decade))[0] == pytest.approx(2.0)
    assert np.trapezoid(np.exp(logp), u[:, 0]) == pytest.approx(1.0, abs=1e-4)


def test_the_normal_is_truncated_to_the_range():
    v = Float("x", 0.0, 1.0, prior=Prior(0.0, 0.3))  # the mode on the wall: half a normal
    x = _unit(v).from_uniform(np.random.default_rng(0).random((20000, 1)))[:, 0]
    assert x.min() >= 0 and x.max() <= 1
    half = stats.truncnorm(0, 1 / 0.3, loc=0, scale=0.3)
    assert stats.kstest(x, half.cdf).pvalue > 0.01
    assert np.trapezoid(np.exp(_unit(v).log_pdf(np.linspace(0, 1, 5001)[:, None])), np.linspace(0, 1, 5001)) \
        == pytest.approx(1.0, abs=1e-4)


def test_from_uniform_of_a_uniform_sample_follows_the_prior():
    x = _unit(LR).from_uniform(np.random.default_rng(1).random((5000, 1)))[:, 0]
    decades = np.log10([LR.from_unit(u) for u in x])
    target = stats.truncnorm((-6 - np.log10(2e-4)) / 0.5, (-2 - np.log10(2e-4)) / 0.5, loc=np.log10(2e-4), scale=0.5)
    assert stats.kstest(decades, target.cdf).pvalue > 0.01


def test_an_integer_gets_the_mass_of_its_cell_and_a_categorical_its_weight():
    r = Int("r", 1, 9, prior=Prior(3, 1.0))
    s = SearchSpace([r, Categorical("c", ("cosine", "linear", "constant", "wsd"),
                                    prior=Prior(weights={"cosine": 0.6, "linear": 0.3}))])
    X = UnitPrior.from_space(s).from_uniform(np.random.default_rng(2).random((40000, 2)))
    params = [s.decode(x) for x in X]
    ranks = np.array([p["r"] for p in params])
    cells = stats.norm(3, 1).cdf(np.arange(1, 10) + 0.5) - stats.norm(3, 1).cdf(np.arange(1, 10) - 0.5)
    cells /= stats.norm(3, 1).cdf(9.5) - stats.norm(3, 1).cdf(0.5)
    assert np.bincount(ranks, minlength=10)[1:] / len(ranks) == pytest.approx(cells, abs=0.01)
    share = {c: np.mean([p["c"] == c for p in params]) for c in ("cosine", "linear", "constant", "wsd")}
    assert share == pytest.approx({"cosine": 0.6, "linear": 0.3, "constant": 0.05, "wsd": 0.05}, abs=0.01)


def test_variables_without_a_prior_stay_uniform():
    s = SearchSpace([LR, Float("u", 0, 1)])
    up = UnitPrior.from_space(s)
    U = np.random.default_rng(3).random((100, 2))
    assert np.array_equal(up.from_uniform(U)[:, 1], U[:, 1])
    assert UnitPrior.from_space(SearchSpace([Float("u", 0, 1)])) is None


@pytest.mark.parametrize("name", ["random", "lhs", "sobol"])
def test_sampling_optimisers_concentrate_near_the_mode(name):
    s = SearchSpace([LR, Float("u", 0, 1)])
    opt = make_optimizer(name, 2, np.random.default_rng(0), 200, prior=UnitPrior.from_space(s))
    decades = np.log10([s.decode(c.x)["learning_rate"] for c in opt.ask(200)])
    assert abs(np.median(decades) - np.log10(2e-4)) < 0.2
    assert np.std(decades) == pytest.approx(0.5, abs=0.1)  # uniform over 4 decades: 1.15
    free = make_optimizer(name, 2, np.random.default_rng(0), 200)
    assert np.std(np.log10([s.decode(c.x)["learning_rate"] for c in free.ask(200)])) > 1.0


def test_lhs_stays_stratified_in_the_priors_quantiles():
    opt = make_optimizer("lhs", 1, np.random.default_rng(0), 50, prior=_unit(LR))
    x = np.array([c.x[0] for c in opt.ask(50)])
    mu, sd = (np.log(2e-4) - np.log(1e-6)) / np.log(1e4), 0.5 * np.log(10) / np.log(1e4)
    q = stats.truncnorm(-mu / sd, (1 - mu) / sd, loc=mu, scale=sd)  # LR's prior in unit coordinates
    assert sorted(np.floor(q.cdf(x) * 50).astype(int)) == list(range(50))  # one point per stratum


# ------------------------------------------------------------------ piBO

def _bo_run(prior, n=30, seed=0):
    """bo on ||x - 0.9||^2 over [0, 1]^2: its points and values."""
    opt = make_optimizer("bo", 2, np.random.default_rng(seed), n,
                         {"n_init": 5, "raw_samples": 256, "num_restarts": 4}, prior=prior)
    xs, ys = [], []
    for _ in range(n):
        (c,) = opt.ask(1)
        y = float(np.sum((c.x - 0.9) ** 2))
        opt.tell(c, y)
        xs.append(c.x)
        ys.append(y)
    return opt, np.array(xs), np.array(ys)


WRONG = SearchSpace([Float("a", 0, 1, prior=Prior(0.1, 0.2)), Float("b", 0, 1, prior=Prior(0.1, 0.2))])


def test_the_priors_weight_decays_with_evaluations():
    opt = make_optimizer("bo", 2, np.random.default_rng(0), 30, {"prior_beta": 10}, prior=UnitPrior.from_space(WRONG))
    weights = []
    for i in range(12):
        (c,) = opt.ask(1)
        opt.tell(c, float(np.sum(c.x ** 2)))
        weights.append(opt.prior_weight())
    assert weights == pytest.approx([10 / n for n in range(1, 13)])
    assert make_optimizer("bo", 2, np.random.default_rng(0)).prior_weight() == 0.0


def test_bo_starts_at_a_wrong_prior_and_leaves_it_as_data_accumulate():
    _, _, free = _bo_run(None)
    opt, xs, ys = _bo_run(UnitPrior.from_space(WRONG))
    mode, optimum = np.full(2, 0.1), np.full(2, 0.9)
    # the design's second point (its first is uniform) is drawn from the prior; once the best
    # results lie away from it, the rest of the design is uniform
    assert np.linalg.norm(xs[1] - mode) < 0.35
    assert np.mean(np.linalg.norm(xs[2:5] - mode, axis=1)) > 0.35
    # ... and by 30 evaluations bo finds the optimum about as well as without the prior
    assert ys.min() < 1e-3 and free.min() < 1e-3
    # (the prior set aside once the best results lie away from it, bo may still probe a corner)
    assert np.median(np.linalg.norm(xs[-5:] - optimum, axis=1)) < 0.2


def test_bo_escapes_a_confident_wrong_prior_on_a_flat_region():
    """A plateau (no signal) where a narrow prior points, the optimum elsewhere: the recorded
    LoRA benchmark's shape (learning rates too small to change the model). With the plain
    piBO weight (floor 0) and the whole design from the prior, the prior's weight outvoted
    every expected improvement for the whole run; now the tied values set the prior aside
    once its region has been tried, and with the floor (0.1, the default) the design's first
    third is uniform as well: bo leaves the plateau and finds the optimum either way."""
    tight = UnitPrior.from_space(SearchSpace([Float("a", 0, 1, prior=Prior(0.1, 0.03)),
                                              Float("b", 0, 1, prior=Prior(0.1, 0.03))]))

    def best(floor):
        opt = make_optimizer("bo", 2, np.random.default_rng(0), 30,
                             {"n_init": 6, "raw_samples": 256, "num_restarts": 4, "prior_floor": floor}, prior=tight)
        ys = []
        for _ in range(30):
            (c,) = opt.ask(1)
            y = 1.0 if c.x[0] < 0.5 else float(np.sum((c.x - 0.9) ** 2))
            opt.tell(c, y)
            ys.append(y)
        return min(ys)

    assert best(0.0) < 0.01 and best(0.1) < 0.01


def test_a_variables_prior_is_contradicted_when_the_best_results_lie_away_from_it():
    up = UnitPrior.from_space(SearchSpace([Float("a", 0, 1, prior=Prior(0.1, 0.05)), Float("b", 0, 1),
                                           Float("c", 0, 1, prior=Prior(0.5, 0.1))]))
    X = np.array([[0.9, 0.2, 0.5], [0.85, 0.7, 0.45], [0.1, 0.5, 0.9], [0.12, 0.4, 0.55]])
    assert up.contradicted(X, np.array([True, True, False, False])) == [0]  # b has no prior, c's is right
    assert up.contradicted(X, np.array([False, False, True, False])) == [2]
    assert up.contradicted(X, np.zeros(4, dtype=bool)) == []
    # a belief not tested yet is not refuted: one point in a's region is not enough
    assert up.contradicted(X[:3], np.array([True, True, False])) == []
    assert up.without([0]).dims[0] is None and up.without([0]).dims[2] is not None
    assert up.without([0, 2]) is None


def test_bo_draws_its_design_from_a_narrow_right_prior_that_the_uniform_start_missed():
    """The design's uniform first third misses a narrow prior; its best results then lie away
    from it, but that does not refute a belief not tried yet: the rest of the design comes
    from the prior (before, the prior was judged contradicted and the design went uniform)."""
    mode = np.array([0.6, 0.3])
    up = UnitPrior.from_space(SearchSpace([Float("a", 0, 1, prior=Prior(0.6, 0.04)),
                                           Float("b", 0, 1, prior=Prior(0.3, 0.04))]))
    opt = make_optimizer("bo", 2, np.random.default_rng(0), 9, {"n_init": 9}, prior=up)
    xs = []
    for _ in range(9):
        (c,) = opt.ask(1)
        opt.tell(c, float(np.sum((c.x - mode) ** 2)))
        xs.append(c.x)
    near = np.linalg.norm(np.array(xs) - mode, axis=1) < 0.15
    assert near[3:].sum() >= 5 and not near[:3].any()


def test_bo_weighs_only_the_priors_the_best_results_support():
    """The acquisition's prior: a variable whose best values lie away from its prior goes
    uniform, a supported one stays; no prior weighs while every value ties and the prior's
    region has been tried: a flat start shows that region to be no better than the rest."""
    up = UnitPrior.from_space(SearchSpace([Float("a", 0, 1, prior=Prior(0.1, 0.1)),
                                           Float("b", 0, 1, prior=Prior(0.5, 0.2))]))
    opt = make_optimizer("bo", 2, np.random.default_rng(0), 30, prior=up)
    rng = np.random.default_rng(1)
    X = rng.random((20, 2))
    y = (X[:, 0] - 0.9) ** 2 + (X[:, 1] - 0.5) ** 2  # minimised: the best at a = 0.9, b = 0.5
    kept = opt.active_prior(X, y)
    assert kept.dims[0] is None and kept.dims[1] is not None
    assert opt.active_prior(X, (X[:, 0] - 0.1) ** 2 + (X[:, 1] - 0.5) ** 2) is up  # both supported
    # tied values: once two of them lie where the prior is denser than the uniform, its
    # region has been tried and shown nothing better; before, it is still the best guess
    tried = np.vstack([X, [[0.1, 0.5], [0.12, 0.48]]])
    assert opt.active_prior(tried, np.full(22, 0.65)) is None
    away = rng.random((6, 2)) * 0.4 + 0.6
    assert opt.active_prior(away, np.full(6, 0.65)) is up
    assert make_optimizer("bo", 2, np.random.default_rng(0)).active_prior(X, y) is None


def test_bo_leaves_a_wrong_prior_on_a_plateau_whose_values_differ_by_rounding():
    """The recorded LoRA benchmark's shape: a plateau over most of the space (learning rates
    too small to change the model) whose values differ in the third decimal, slightly better
    where a narrow, wrong prior points. The design's uniform first third finds the better
    region, the best results then contradict the prior, and bo leaves the plateau (with every
    third design point uniform and the whole prior weighing, it stayed on the plateau for all
    30 evaluations)."""
    tight = UnitPrior.from_space(SearchSpace([Float(f"a{i}", 0, 1, prior=Prior(0.1, 0.03)) for i in range(3)]))
    opt = make_optimizer("bo", 3, np.random.default_rng(0), 30, {"raw_samples": 256, "num_restarts": 4}, prior=tight)
    ys = []
    for _ in range(30):
        (c,) = opt.ask(1)
        plateau = 1.0 - 0.003 * np.exp(-np.sum((c.x - 0.1) ** 2) / 0.02)
        ys.append(float(plateau if c.x[0] < 0.7 else np.sum((c.x - 0.9) ** 2)))
        opt.tell(c, ys[-1])
    assert min(ys) < 0.9


def test_prior_beta_is_checked():
    with pytest.raises(ConfigError, match="prior_beta must be a number >= 0"):
        make_optimizer("bo", 2, np.random.default_rng(0), options={"prior_beta": -1})


# ------------------------------------------------------------------ parsing

def _config(tmp_path, space: str, optimizer: str = "bo"):
    text = (ROOT / "examples/demo.toml").read_text()
    head, tail = text.split("[space]", 1)
    text = head + space + "\n[model]" + tail.split("[model]", 1)[1]  # the demo's warm start left out
    text = text.replace('name = "soo"', f'name = "{optimizer}"').replace("K = 3", "")
    (tmp_path / "s.toml").write_text(text)
    return load_config(tmp_path / "s.toml")


def test_a_toml_prior_parses_round_trips_and_is_listed(tmp_path):
    cfg = _config(tmp_path, '[space.learning_rate]\ntype = "float"\nlow = 1e-6\nhigh = 1e-2\nlog = true\n'
                            'prior = { mode = 3e-4, spread = 1 }\n'
                            '[space.lora_rank]\ntype = "int"\nlow = 2\nhigh = 64\n')
    assert cfg.space["learning_rate"].prior == Prior(3e-4, 1)
    assert cfg.space["lora_rank"].prior is None and "prior" not in cfg.space.to_dict()[1]
    again = type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.space == cfg.space
    assert "prior 0.0003 +- 1 decade" in repr(cfg.space)


@pytest.mark.parametrize("prior, message", [
    ("{ mode = 1.0, spread = 1 }", "prior mode = 1 lies outside"),
    ("{ mode = 2e-4, spread = 0 }", "prior spread = 0 must be > 0"),
    ("{ mode = 2e-4, width = 1 }", "prior has an unknown key 'width'"),
    ("{ mode = 2e-4 }", "prior has no spread; give both"),
    ("{ weights = { a = 1 } }", "prior weights are for categorical variables"),
    ('"wide"', "prior = 'wide' must be a table"),
])
def test_bad_priors_are_one_line_errors(tmp_path, prior, message):
    with pytest.raises(ConfigError, match=f"variable 'learning_rate': {message}"):
        _config(tmp_path, '[space.learning_rate]\ntype = "float"\nlow = 1e-6\nhigh = 1e-2\nlog = true\n'
                          f'prior = {prior}\n')


def test_categorical_weights_must_name_its_choices():
    with pytest.raises(ConfigError, match="weights name 'step', which is not one of"):
        Categorical("scheduler", ("cosine", "linear"), prior=Prior(weights={"step": 1}))


def test_the_builtin_lora_prior_is_on_for_the_paper_preset_and_can_be_turned_off(tmp_path):
    on = _config(tmp_path, '[space]\npreset = "paper"\n')
    assert on.space["learning_rate"].prior == Prior(2e-4, 1.0)
    assert all(v.prior is not None for v in on.space)
    off = _config(tmp_path, '[space]\npreset = "paper"\nprior = "none"\n')
    assert all(v.prior is None for v in off.space)
    own = _config(tmp_path, '[space]\npreset = "paper"\n[space.learning_rate]\nprior = { mode = 1e-4, spread = 0.3 }\n')
    assert own.space["learning_rate"].prior == Prior(1e-4, 0.3)
    assert own.space["lora_rank"].prior == on.space["lora_rank"].prior
    with pytest.raises(ConfigError, match="\\[space\\] prior = 'off' must be \"builtin\""):
        _config(tmp_path, '[space]\npreset = "paper"\nprior = "off"\n')


def test_priors_leave_the_config_hash_alone(tmp_path):
    on = _config(tmp_path, '[space]\npreset = "paper"\n')
    off = _config(tmp_path, '[space]\npreset = "paper"\nprior = "none"\n')
    assert on.search_hash() == off.search_hash()
    assert load_config(ROOT / "examples/demo.toml").search_hash() == "b1a5119e8cc5c7eb"  # as stored before priors


def _lr_loss(learning_rate, warmup):
    return (np.log10(learning_rate) + 2) ** 2 + warmup


def test_the_api_takes_priors_in_both_forms_and_the_run_samples_from_them():
    import llmhpo

    for lr in (Float("learning_rate", 1e-6, 1e-2, log=True, prior=llmhpo.Prior(2e-4, 0.2)),
               {"type": "float", "low": 1e-6, "high": 1e-2, "log": True, "prior": {"mode": 2e-4, "spread": 0.2}}):
        s = llmhpo.optimize(_lr_loss, {"learning_rate": lr, "warmup": Float("warmup", 0, 1)}, trials=40,
                            optimizer="random", quiet=True)
        best = np.log10(s.best_params["learning_rate"])
        # drawn near the prior's mode (5 spreads), not near the optimum at 1e-2 as 40 uniform draws would
        assert abs(best - np.log10(2e-4)) < 1.0


def _two_objective_bo(beta: float):
    """bo on two objectives whose front lies near (0.85, 0.75), told a 3 x 3 grid, with a
    tight prior at (0.2, 0.2): its first model-based point."""
    tight = SearchSpace([Float("a", 0, 1, prior=Prior(0.2, 0.05)), Float("b", 0, 1, prior=Prior(0.2, 0.05))])
    opt = make_optimizer("bo", 2, np.random.default_rng(0), 12,
                         {"n_init": 1, "raw_samples": 128, "num_restarts": 2, "prior_beta": beta, "prior_floor": 0},
                         n_objectives=2, prior=UnitPrior.from_space(tight))
    def values(x):
        return [float(np.sum((x - 0.8) ** 2)), float(np.sum((x - [0.9, 0.7]) ** 2))]

    (c,) = opt.ask(1)
    opt.tell(c, values(c.x))
    for x in np.stack(np.meshgrid([0.1, 0.5, 0.9], [0.1, 0.5, 0.9]), -1).reshape(-1, 2):
        opt.tell(opt.register(x), values(x))
    (c,) = opt.ask(1)
    assert c.info["phase"] == "model"
    return c.x


def test_bo_weights_qlognehvi_by_the_prior_too():
    assert np.linalg.norm(_two_objective_bo(0) - 0.2) > 0.4  # without the weight: towards the front
    assert np.linalg.norm(_two_objective_bo(10) - 0.2) < 0.2  # weight 10 / 10: the prior still leads


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimiser_with_a_prior_stays_in_the_box_and_continues_identically(name):
    """The conformance contract with a prior set: points in [0, 1]^d, same seed same points,
    and a restored state continues as the original (the prior is not part of the state)."""
    prior = UnitPrior.from_space(WRONG)
    f = get_function("branin")
    options = {"n_init": 4, "num_restarts": 2, "raw_samples": 32} if name == "bo" else None

    def drive(opt, n):
        out = []
        for _ in range(n):
            for c in opt.ask(2):
                opt.tell(c, f(f.from_unit(c.x)))
                out.append(c.x)
        return np.array(out)

    a, b = (make_optimizer(name, 2, np.random.default_rng(5), 20, options, prior=prior) for _ in range(2))
    xa = drive(a, 3)
    np.testing.assert_array_equal(xa, drive(b, 3))
    assert xa.min() >= 0 and xa.max() <= 1
    c = make_optimizer(name, 2, np.random.default_rng(99), 20, options, prior=prior)
    c.load_state_dict(json.loads(json.dumps(a.state_dict())))
    np.testing.assert_allclose(drive(a, 2), drive(c, 2), rtol=0, atol=1e-12)


def test_a_boolean_choice_takes_its_toml_key_and_a_table_without_type_changes_the_own_space(tmp_path):
    v = Categorical("use_r", [True, False], prior=Prior(weights={"true": 0.9, "false": 0.1}))
    assert _unit(v).dims[0].p == pytest.approx((0.9, 0.1))
    p = tmp_path / "s.toml"
    head = ('[study]\nname = "s"\n[budget]\ntrials = 2\n[optimizer]\nname = "random"\n'
            '[objective]\ntype = "function"\nname = "branin"\n')
    p.write_text(head + '[space.x0]\nprior = { mode = 3.0, spread = 1.0 }\ndefault = 2.0\n')
    space = load_config(p).space
    assert space["x0"].prior == Prior(3.0, 1.0) and space["x0"].default == 2.0 and space["x1"].prior is None
    assert (space["x0"].low, space["x0"].high) == (-5.0, 10.0)  # branin's own box
    p.write_text(head + '[space.x3]\nprior = { mode = 3.0, spread = 1.0 }\n')
    with pytest.raises(ConfigError, match=r"changes prior of variable 'x3', but function branin's own space has no such variable \(it has x0, x1\)"):
        load_config(p)
    p.write_text(head + '[space]\nprior = "builtin"\n')  # the default, written out: nothing to add here
    assert UnitPrior.from_space(load_config(p).space) is None
    p.write_text(head + '[space.x1]\nprior = { mode = 3.0, spread = 1.0 }\n[space.x0]\ntype = "float"\nlow = 0\nhigh = 1\n')
    with pytest.raises(ConfigError, match=r"but \[space\] has no such variable \(it has x0\) \(a table with type "
                                          r"replaces the objective's own space: add preset"):
        load_config(p)


def test_the_recorded_benchmark_takes_the_builtin_lora_prior_on_its_unit_coordinates(tmp_path):
    from llmhpo.objectives.finetune.presets import paper_space

    p = tmp_path / "s.toml"
    p.write_text('[study]\nname = "s"\n[budget]\ntrials = 2\n[optimizer]\nname = "bo"\n'
                 '[objective]\ntype = "function"\nname = "lora_smollm2"\n[space]\nprior = "builtin"\n')
    ours, paper = UnitPrior.from_space(load_config(p).space), UnitPrior.from_space(paper_space())
    X = np.random.default_rng(0).random((64, 5))
    np.testing.assert_allclose(ours.log_pdf(X), paper.log_pdf(X), atol=1e-9)
    narrowed = "".join(f'[space.x{i}]\ntype = "float"\nlow = 0.05\nhigh = 0.95\n' for i in range(5))
    p.write_text(p.read_text() + narrowed)  # a narrowed box keeps the prior on the same names
    assert all(v.prior is not None for v in load_config(p).space)
    p.write_text(p.read_text().replace('[space]\nprior = "builtin"\n', ""))
    assert UnitPrior.from_space(load_config(p).space) is None  # off unless asked for


def test_check_lists_every_choice_of_a_prior_and_joins_conditions_with_and():
    s = SearchSpace([Categorical("a", (True, False)), Int("r", 2, 8),
                     Categorical("s", ("constant", "linear", "cosine"), prior=Prior(weights={"cosine": 0.6, "linear": 0.3})),
                     Float("w", 0, 1, when={"a": [True], "r": [4, 8]})])
    text = repr(s)
    assert "(prior constant: 0.1, linear: 0.3, cosine: 0.6)" in text  # the unlisted choice's share too
    assert "w: float in [0, 1] when a = True and r in [4, 8]" in text
    with pytest.raises(ConfigError, match=r"^variable 'sched': prior weights = \[0.1, 0.6\] must be a table"):
        Prior.from_dict("sched", {"weights": [0.1, 0.6]})


def test_bad_weights_and_spreads_are_refused_and_numeric_choices_take_toml_keys():
    v = Categorical("s", ("constant", "linear", "cosine"))
    with pytest.raises(ConfigError, match="weight of 'cosine' = inf must be a finite number >= 0"):
        replace(v, prior=Prior(weights={"cosine": float("inf")}))
    only_zero = replace(v, prior=Prior(weights={"linear": 0}))  # the unlisted share what is left of 1
    assert _unit(only_zero).dims[0].p == pytest.approx((0.5, 0.0, 0.5))
    with pytest.raises(ConfigError, match="over 100 times the range's width"):
        Float("lr", 1e-6, 1e-2, log=True, prior=Prior(1e-4, 1000))
    with pytest.raises(ConfigError, match="over 100 times the range's width"):
        Float("d", 0, 0.5, prior=Prior(0.1, 1e17))
    lr = Categorical("lr", (1e-4, 2e-4), prior=Prior(weights={"2e-4": 0.7}))
    assert _unit(lr).dims[0].p == pytest.approx((0.3, 0.7))
    with pytest.raises(ConfigError, match=r"weights name 0.0002 twice \('2E-4' and '0.0002'\)"):
        Categorical("lr", (1e-4, 2e-4), prior=Prior(weights={"2E-4": 0.5, "0.0002": 0.1}))
    with pytest.raises(ConfigError, match=r'prior = \{ weights = \{ "0.0001" = 0.6 \} \}'):
        Categorical("lr", (1e-4, 2e-4), prior=Prior(1e-4, 0.1))


def test_a_conditional_variables_prior_is_judged_on_the_results_where_it_is_active():
    """warmup exists only with sched = linear: the constant trials, whatever their score,
    say nothing for or against its prior."""
    space = SearchSpace([Categorical("sched", ("constant", "linear")),
                         Float("warmup", 0, 0.2, prior=Prior(0.19, 0.01), when={"sched": ["linear"]})])
    up = UnitPrior.from_space(space)

    def point(sched, w):
        return space.snap(np.array([0.25 if sched == "constant" else 0.75, w / 0.2]))

    X = np.array([point("constant", 0)] * 6 + [point("linear", w) for w in (0.19, 0.185, 0.02, 0.05)])
    # the constant trials are the best; among the linear ones those near 0.19 are
    y = np.array([0.1, 0.1, 0.11, 0.12, 0.12, 0.13, 0.5, 0.5, 0.9, 0.9])
    assert up.supported(X, y) is up
    y_wrong = np.array([0.1, 0.1, 0.11, 0.12, 0.12, 0.13, 0.9, 0.9, 0.5, 0.5])  # the linear best lie away from it
    assert up.supported(X, y_wrong) is None


def test_a_python_dict_space_takes_the_keys_of_toml_space():
    import llmhpo
    from llmhpo.api import _space_tables

    tables = _space_tables({"x": Float("ignored", 0, 1, prior=Prior(0.5, 0.1)), "prior": "none"})
    assert tables["prior"] == "none" and tables["x"]["prior"] == {"mode": 0.5, "spread": 0.1}
    summary = llmhpo.optimize(lambda x: x, {"x": {"type": "float", "low": 0, "high": 1}, "prior": "none"},
                              trials=2, optimizer="random", quiet=True)
    assert summary.complete == 2
    conditional = {"s": Categorical("ignored", ("a", "b")), "w": Float("ignored", 0, 1, when={"s": ["b"]})}
    assert _space_tables(conditional)["w"]["when"] == {"s": ["b"]}  # each Variable alone, its condition kept
    with pytest.raises(ConfigError, match="a python objective has no presets"):
        llmhpo.optimize(lambda x: x, {"x": {"type": "float", "low": 0, "high": 1}, "preset": "paper"}, trials=2,
                        optimizer="random", quiet=True)
