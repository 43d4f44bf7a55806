"""Conditional search spaces (``when``): a variable active only when others take given
values is neither searched nor stored while inactive, by every optimiser, and a resumed
study goes on without repeats."""

import numpy as np
import optuna
import pytest

import llmhpo
from llmhpo import ConfigError
from llmhpo.optimizers import OPTIMIZERS
from llmhpo.space import Categorical, Float, Int, SearchSpace
from llmhpo.study import Study


def space() -> SearchSpace:
    return SearchSpace([
        Categorical("scheduler", ("constant", "linear", "cosine")),
        Float("warmup", 0.0, 0.2, when={"scheduler": ["linear", "cosine"]}),
        Int("cycles", 1, 4, when={"scheduler": "cosine"}),  # a single value needs no list
        Float("lr", 1e-4, 1e-1, log=True),
        Categorical("decay", (True, False), when={"cycles": [3, 4]}),  # a chain: cosine and 3-4 cycles
    ])


def expected(params) -> set[str]:
    names = {"scheduler", "lr"}
    if params["scheduler"] in ("linear", "cosine"):
        names.add("warmup")
    if params["scheduler"] == "cosine":
        names.add("cycles")
        if params["cycles"] in (3, 4):
            names.add("decay")
    return names


def objective(scheduler, lr, warmup=0.0, cycles=1, decay=False):
    return (np.log10(lr) + 2) ** 2 + {"constant": 0.3, "linear": 0.1, "cosine": 0.0}[scheduler] \
        + (warmup - 0.05) ** 2 + 0.01 * abs(cycles - 3) + (0.0 if decay else 0.02)


# ---------------------------------------------------------------------- the space itself
def test_decode_keeps_only_active_variables_and_chains():
    s = space()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        p = s.decode(rng.random(s.dim))
        assert set(p) == expected(p)
        assert s.active(p) == [n for n in s.names if n in p]
        seen.add(frozenset(p))
    assert len(seen) == 4  # constant, linear, cosine with 1-2 cycles, cosine with 3-4 (decay)


def test_snap_moves_inactive_coordinates_to_one_point():
    s = space()
    a = s.snap(np.array([0.1, 0.3, 0.9, 0.5, 0.2]))  # constant: warmup, cycles, decay inactive
    b = s.snap(np.array([0.1, 0.7, 0.1, 0.5, 0.8]))
    assert np.array_equal(a, b)
    assert np.array_equal(a, s.encode(s.decode(a)))
    assert s.decode(a) == {"scheduler": "constant", "lr": s["lr"].from_unit(0.5)}
    # active coordinates are untouched (beyond the usual snapping of ints and choices)
    c = s.snap(np.array([0.9, 0.3, 0.9, 0.5, 0.2]))
    assert c[1] == 0.3 and s.decode(c)["decay"] is True
    # an inactive variable's canonical value is its default's unit point
    d = SearchSpace([Categorical("a", ("x", "y")), Float("b", 0, 1, default=0.25, when={"a": "y"})])
    assert d.snap(np.array([0.2, 0.9]))[1] == pytest.approx(0.25)


def test_encode_fills_inactive_and_refuses_a_value_for_one():
    s = space()
    x = s.encode({"scheduler": "linear", "warmup": 0.1, "lr": 0.01})
    assert s.decode(x) == pytest.approx({"scheduler": "linear", "warmup": 0.1, "lr": 0.01})
    with pytest.raises(ConfigError, match=r"'warmup' is inactive here \(scheduler='constant'.*remove it"):
        s.encode({"scheduler": "constant", "warmup": 0.1, "lr": 0.01})
    with pytest.raises(ConfigError, match=r"'decay' is inactive here \('cycles' is inactive"):
        s.encode({"scheduler": "linear", "warmup": 0.1, "lr": 0.01, "decay": True})
    with pytest.raises(ConfigError, match="'warmup' is missing"):  # an active variable must be given
        s.encode({"scheduler": "linear", "lr": 0.01})
    # filled in: scheduler's centre choice is "linear", so warmup is active and filled too
    assert set(s.decode(s.encode({"lr": 0.01}, fill_defaults=True))) == {"scheduler", "warmup", "lr"}


@pytest.mark.parametrize("variables, message", [
    (lambda: [Categorical("a", ("x", "y")), Float("b", 0, 1, when={"c": "x"})], "when names 'c', which is not in"),
    (lambda: [Categorical("a", ("x", "y")), Float("b", 0, 1, when={"a": "z"})], "when a = 'z', but 'a' is one of"),
    (lambda: [Int("a", 1, 3), Float("b", 0, 1, when={"a": [3, 4]})], r"when a = 4, but 'a' is int in \[1, 3\]"),
    (lambda: [Categorical("a", (True, False)), Float("b", 0, 1, when={"a": 1})], "when a = 1, but 'a' is one of"),
    (lambda: [Float("a", 0, 1), Float("b", 0, 1, when={"a": 1})], "a float; a condition can only name"),
    (lambda: [Categorical("a", ("x", "y"), when={"a": "x"})], "names the variable itself"),
    (lambda: [Categorical("a", (1, 2), when={"c": 1}), Categorical("b", (1, 2), when={"a": 1}),
      Categorical("c", (1, 2), when={"b": 2})], "cycle: a -> c -> b -> a"),
    (lambda: [Categorical("a", ("x", "y")), Float("b", 0, 1, when={"a": []})], "lists no value"),
    (lambda: [Categorical("a", ("x", "y")), Float("b", 0, 1, when="a")], "must be a table"),
])
def test_bad_conditions_are_refused_in_one_line(variables, message):
    with pytest.raises(ConfigError, match=message) as e:
        SearchSpace(variables())
    assert "\n" not in str(e.value)


def test_when_round_trips_and_an_unconditional_variable_serialises_as_before():
    s = space()
    assert SearchSpace.from_dict(s.to_dict()) == s
    assert "when" not in s.to_dict()[0] and s.to_dict()[2]["when"] == {"scheduler": ["cosine"]}
    toml_like = {"scheduler": {"type": "categorical", "choices": ["constant", "linear", "cosine"]},
                 "warmup": {"type": "float", "low": 0, "high": 0.2, "when": {"scheduler": ["linear", "cosine"]}}}
    assert SearchSpace.from_dict(toml_like)["warmup"].when == (("scheduler", ("linear", "cosine")),)
    with pytest.raises(ConfigError, match="unknown key 'whenn'"):
        SearchSpace.from_dict({"a": {"type": "float", "low": 0, "high": 1, "whenn": {}}})


# ---------------------------------------------------------------------- studies
def _stored(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).trials


def _check_trials(trials, s: SearchSpace) -> None:
    seen = set()
    for t in trials:
        assert set(t.params) == expected(t.params), (t.number, t.params)
        assert set(t.distributions) == set(t.params)
        key = tuple(sorted((k, round(v, 12) if isinstance(v, float) else v) for k, v in t.params.items()))
        assert key not in seen, f"trial {t.number} repeats {t.params}"
        seen.add(key)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_stores_only_active_variables(tmp_path, name):
    storage = f"sqlite:///{tmp_path}/c.db"
    s = llmhpo.optimize(objective, space(), trials=10, optimizer=name, storage=storage, study_name="c",
                        seed=1, quiet=True, progress=False)
    assert s.complete == 10, s.stopped
    trials = _stored(storage, "c")
    assert len(trials) == 10
    _check_trials(trials, space())
    assert set(s.best_params) == expected(s.best_params)


@pytest.mark.parametrize("name", ["bo", "optuna_tpe", "genetic", "random"])
def test_a_resumed_study_goes_on_without_repeats_or_inactive_params(tmp_path, name):
    storage = f"sqlite:///{tmp_path}/r.db"
    kw = dict(optimizer=name, storage=storage, study_name="r", seed=2, quiet=True, progress=False,
              warm_start=[{"scheduler": "constant", "lr": 0.01}, {"scheduler": "cosine", "warmup": 0.05, "cycles": 3,
                                                                   "lr": 0.01, "decay": True}])
    llmhpo.optimize(objective, space(), trials=6, **kw)
    first = _stored(storage, "r")
    assert len(first) == 6
    s = llmhpo.optimize(objective, space(), trials=12, **kw)
    assert s.complete == 12
    trials = _stored(storage, "r")
    assert [t.params for t in trials[:6]] == [t.params for t in first]  # the first run's trials are kept
    _check_trials(trials, space())
    assert trials[0].params == pytest.approx({"scheduler": "constant", "lr": 0.01})
    # the stored space, with its conditions, is what the study reopens with
    assert Study.load(storage, "r").config.space == space()


def test_a_warm_start_giving_an_inactive_variable_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="'warmup' is inactive here"):
        llmhpo.optimize(objective, space(), trials=2, quiet=True,
                        warm_start=[{"scheduler": "constant", "warmup": 0.1, "lr": 0.01}])


def test_a_function_without_a_default_for_a_conditional_variable_is_refused():
    def f(scheduler, lr, warmup, cycles=1, decay=False):
        return lr

    with pytest.raises(ConfigError, match="'warmup' is conditional.*give it a default"):
        llmhpo.optimize(f, space(), trials=2, quiet=True)


def test_a_boolean_parent_and_a_finetune_config_with_a_conditional_knob(tmp_path):
    s = SearchSpace([Categorical("use_rslora", (True, False)), Int("lora_alpha", 4, 64, when={"use_rslora": False})])
    assert s.decode(np.array([0.2, 0.5])) == {"use_rslora": True}
    assert set(s.decode(np.array([0.8, 0.5]))) == {"use_rslora", "lora_alpha"}
    from pathlib import Path

    from llmhpo.config import load_config
    from llmhpo.objectives.finetune.config import TrainConfig

    text = (Path(__file__).resolve().parents[1] / "examples" / "demo.toml").read_text()
    text = text.replace('scheduler = "constant"\n', "")
    text = text.replace('preset = "paper"\n', '''preset = "paper"
[space.scheduler]
type = "categorical"
choices = ["constant", "linear", "cosine"]
[space.warmup_ratio]
type = "float"
low = 0.0
high = 0.2
when = { scheduler = ["linear", "cosine"] }
''')
    (tmp_path / "s.toml").write_text(text)
    cfg = load_config(tmp_path / "s.toml")
    assert cfg.space["warmup_ratio"].when == (("scheduler", ("linear", "cosine")),)
    assert cfg.to_dict()["space"]["warmup_ratio"]["when"] == {"scheduler": ["linear", "cosine"]}
    assert "when" not in cfg.to_dict()["space"]["learning_rate"]
    # an inactive warmup_ratio is the [train] value (0.0) in the trial's training settings
    params = cfg.space.decode(cfg.space.encode({"scheduler": "constant", "learning_rate": 2e-4, "lora_rank": 8,
                                                "lora_alpha": 16}, fill_defaults=True))
    assert "warmup_ratio" not in params
    assert TrainConfig().with_params(params).warmup_ratio == 0.0
    (tmp_path / "bad.toml").write_text(text.replace('scheduler = ["linear", "cosine"]', 'scheduler = ["linaer"]'))
    with pytest.raises(ConfigError, match="when scheduler = 'linaer', but 'scheduler' is one of"):
        load_config(tmp_path / "bad.toml")


def test_a_benchmark_function_refuses_a_conditional_argument():
    from llmhpo.config import Config

    raw = {"study": {"name": "f"}, "budget": {"trials": 2}, "optimizer": {"name": "random"}, "objective": {"type": "function", "name": "branin"},
           "space": {"a": {"type": "categorical", "choices": [0, 1]},
                     "b": {"type": "float", "low": 0, "high": 1, "when": {"a": 1}}}}
    with pytest.raises(ConfigError, match="b has a 'when', but function 'branin' takes all its arguments"):
        Config.from_dict(raw)


def test_a_grid_covers_every_choice_and_asks_each_configuration_once(tmp_path):
    """Levels 2 on a 3-choice categorical still visits all three; cells that differ only in an
    inactive variable, or round to one integer, are skipped rather than moved off the grid."""
    s = SearchSpace([
        Categorical("scheduler", ("constant", "linear", "cosine")),
        Float("warmup", 0.0, 0.2, when={"scheduler": ["linear", "cosine"]}),
        Int("cycles", 1, 2),  # 5 levels asked: 2, its count of values
        Float("lr", 1e-4, 1e-2, log=True),
    ])
    storage = f"sqlite:///{tmp_path}/g.db"
    r = llmhpo.optimize(lambda scheduler, lr, cycles, warmup=0.0: lr + warmup, s, trials=40, optimizer="grid",
                        optimizer_options={"levels": [2, 2, 5, 2]}, storage=storage, study_name="g", quiet=True,
                        progress=False)
    trials = _stored(storage, "g")
    assert r.complete == len(trials) == 2 * (2 + 4 + 4)  # 2 cycles x (constant x 2 lr; linear, cosine x 2 x 2)
    assert {t.params["cycles"] for t in trials} == {1, 2}
    assert {t.params["scheduler"] for t in trials} == {"constant", "linear", "cosine"}
    assert {round(t.params["warmup"], 9) for t in trials if "warmup" in t.params} == {0.05, 0.15}
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)
