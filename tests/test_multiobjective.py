"""Several objectives and constraints: the Pareto set and hypervolume against hand-computed
cases, constraints absolute and relative to the base model's score, parsing, every
optimiser either taking two objectives or refused, resume, and a study read back by Optuna."""

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import optuna
import pytest

import llmhpo
from llmhpo.config import Config, load_config
from llmhpo.errors import ConfigError
from llmhpo.goals import Bound, Constraint, evaluate, parse_constraints
from llmhpo.objectives import ObjectiveKind, Result
from llmhpo.optimizers import MULTI_OBJECTIVE, OPTIMIZERS, make_optimizer
from llmhpo.pareto import hypervolume, non_dominated
from llmhpo.runner import run
from llmhpo.space import Float, SearchSpace
from llmhpo.study import Study

TWO = """
[study]
objectives = [{ metric = "branin", direction = "minimize" }, { metric = "currin", direction = "minimize" }]
seed = 1
[budget]
trials = TRIALS
[optimizer]
name = "OPT"
[objective]
type = "function"
name = "branin_currin"
"""


def two_objectives(tmp_path, trials=8, optimizer="random", extra="", options=""):
    path = tmp_path / "two.toml"
    path.write_text(TWO.replace("TRIALS", str(trials)).replace('"OPT"', f'"{optimizer}"\n{options}') + extra)
    return load_config(path)


# ---------------------------------------------------------------- the numeric core
def test_non_dominated_keeps_equal_points_and_drops_dominated_ones():
    Y = [[1, 3], [2, 2], [3, 1], [2, 3], [2, 2], [4, 4]]
    assert non_dominated(Y).tolist() == [True, True, True, False, True, False]


def test_hypervolume_against_hand_computed_areas():
    # boxes [1,4]x[3,4], [2,4]x[2,4], [3,4]x[1,4]: their union has area 1 + 2 + 3
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    # a dominated point, a duplicate and one beyond the reference add nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [3, 3], [2, 2], [5, 0]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[4, 1]], [4, 4]) == 0.0  # on the reference point's edge
    assert hypervolume([[1], [3]], [4]) == pytest.approx(3.0)
    # three objectives: two unit-thick slabs of volume 2 that share a unit cube
    assert hypervolume([[0, 1, 1], [1, 0, 1]], [2, 2, 2]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="reference point has 3"):
        hypervolume([[1, 2]], [3, 3, 3])


def test_pareto_set_and_hypervolume_with_maximised_and_minimised_objectives(tmp_path):
    """Accuracy maximised, seconds minimised, one trial infeasible: the Pareto set, its
    order and hypervolume by hand, and Optuna's best_trials on the stored study agree."""
    cfg = Config.from_dict({
        "study": {"name": "mixed", "storage": f"sqlite:///{tmp_path / 'm.db'}",
                  "objectives": [{"metric": "acc", "direction": "maximize"},
                                 {"metric": "timings.total", "direction": "minimize"}]},
        "budget": {"trials": 6}, "optimizer": {"name": "random"},
        "objective": {"type": "function", "name": "branin_currin"},
        "constraint": [{"metric": "mem", "max": 10}]})
    st = Study.open(cfg)
    opt = make_optimizer("random", 2, np.random.default_rng(0), n_objectives=2)
    points = [(0.9, 10), (0.8, 5), (0.7, 20), (0.9, 10), (0.95, 30), (1.0, 1)]
    for i, (acc, sec) in enumerate(points):
        cand = opt.ask(1)[0]
        tid = st.create_trial(cand, cfg.space.decode(cand.x))
        mem = 20.0 if i == 5 else 1.0  # the last one, best in both, breaks the constraint
        values, cons = evaluate(cfg.study.objectives, cfg.constraints, 0.0, {"acc": acc, "mem": mem},
                                {"total": sec}, None)
        st.finish_trial(tid, values, {"acc": acc, "mem": mem}, {"total": sec}, constraints=cons)
    assert [r.number for r in st.pareto()] == [4, 0, 3, 1]
    # reference: the worst feasible values (acc 0.7, 30 s); trial 4 sits on its 30 s edge
    assert st.reference_point() == [(0.7, "worst"), (30.0, "worst")]
    assert st.hypervolume() == pytest.approx(0.1 * 20 + 0.1 * 25)
    assert st.best().number == 4
    ours = sorted(r.number for r in st.pareto())
    st.close()
    loaded = optuna.load_study(study_name="mixed", storage=f"sqlite:///{tmp_path / 'm.db'}")
    assert sorted(t.number for t in loaded.best_trials) == ours
    assert loaded.trials[5].constraints == {"0": 10.0}


# ---------------------------------------------------------------- parsing
def test_single_objective_config_is_unchanged_and_several_round_trip(tmp_path):
    one = load_config("examples/branin-soo.toml")
    d = one.to_dict()
    assert "objectives" not in d["study"] and "constraint" not in d and d["study"]["direction"] == "minimize"
    cfg = two_objectives(tmp_path, extra='[[constraint]]\nmetric = "regret"\nmax = 50\n')
    d = cfg.to_dict()
    assert "direction" not in d["study"] and d["constraint"] == [{"metric": "regret", "max": 50.0}]
    again = Config.from_dict(json.loads(json.dumps(d)))
    assert again.search_hash() == cfg.search_hash() and again.study.objectives == cfg.study.objectives
    assert cfg.study.directions == ["minimize", "minimize"]


@pytest.mark.parametrize("study, constraint, message", [
    ('objectives = [{ metric = "a", direction = "up" }, { metric = "b", direction = "minimize" }]', "",
     "direction = 'up' must be"),
    ('objectives = [{ metric = "a", direction = "minimize" }]', "", "lists 1 objective"),
    ('objectives = [{ metric = "a b", direction = "minimize" }, { metric = "c", direction = "minimize" }]', "",
     "is not a metric name"),
    ('objectives = [{ metric = "a", direction = "minimize" }, { metric = "a", direction = "maximize" }]', "",
     "names 'a' twice"),
    ('direction = "minimize"\nobjectives = [{ metric = "a", direction = "minimize" }, '
     '{ metric = "b", direction = "minimize" }]', "", "drop direction"),
    ('objectives = [{ metric = "a", direction = "minimize", weight = 1 }, { metric = "b", direction = "minimize" }]',
     "", "unknown key 'weight'"),
    ("", 'metric = "a"\nmin = "base - 0.01"', "needs the base model's score"),
    ("", 'metric = "a"\nmin = "base * 0.9"', "must be a number, or relative"),
    ("", 'metric = "a"', "needs min, max or both"),
    ("", 'metric = "a"\nmin = 2\nmax = 1', "is above max"),
])
def test_bad_objectives_and_constraints_are_one_line_errors(tmp_path, study, constraint, message):
    text = f'[study]\n{study}\n[budget]\ntrials = 3\n[optimizer]\nname = "random"\n[objective]\ntype = "function"\n'
    if constraint:
        text += f"[[constraint]]\n{constraint}\n"
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(tmp_path / "s.toml")
    assert "\n" not in str(e.value)


def test_fidelity_and_reevaluate_are_refused_with_several_objectives(tmp_path):
    with pytest.raises(ConfigError, match=r"does not work with \[fidelity\] yet"):
        two_objectives(tmp_path, extra="[fidelity]\nmin = 1\nmax = 9\n")
    with pytest.raises(ConfigError, match="reevaluate is for single-objective"):
        path = tmp_path / "r.toml"
        path.write_text(TWO.replace("TRIALS", "3").replace("OPT", "random").replace("seed = 1", "seed = 1\nreevaluate = 2"))
        load_config(path)


def test_relative_bounds_parse_strictly_and_resolve_against_the_base():
    (c,) = parse_constraints([{"metric": "general/acc", "min": "base - 0.01", "max": "base+0.5"}], scores_base=True)
    assert c.min == Bound(-0.01, relative=True) and c.max == Bound(0.5, relative=True)
    assert c.to_dict() == {"metric": "general/acc", "min": "base - 0.01", "max": "base + 0.5"}
    assert c.values(0.495, base=0.5) == pytest.approx([-0.005, -0.505])  # holds: 0.49 <= 0.495 <= 1.0
    assert c.values(0.48, base=0.5)[0] == pytest.approx(0.01)  # breaks the min by 0.01
    absolute = Constraint("peak_memory_mb", max=Bound(40_000.0))
    assert absolute.values(41_000.0, base=None) == [1000.0]


def test_a_trial_without_a_named_metric_fails_naming_what_it_has():
    from llmhpo.errors import TrialFailed
    from llmhpo.goals import Objective

    with pytest.raises(TrialFailed, match=r"no number for metric 'acc'; it has: value, loss, timings.total"):
        evaluate([Objective("loss", "minimize"), Objective("acc", "maximize")], [], 1.0, {"loss": 0.3},
                 {"total": 2.0}, None)


# ---------------------------------------------------------------- optimisers
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "bo" else n  # bo: torch, ~10 s
                                  for n in OPTIMIZERS])
def test_every_optimizer_takes_two_objectives_or_is_refused_before_any_trial(tmp_path, name):
    if name not in MULTI_OBJECTIVE:
        with pytest.raises(ConfigError) as e:
            two_objectives(tmp_path, optimizer=name)
        assert str(e.value) == (f"optimizer '{name}' optimises one objective; with [study] objectives use "
                                "bo, random, grid, lhs, sobol, optuna_tpe, optuna_gp or optuna_nsga2")
        assert OPTIMIZERS[name].multi_objective is False
        return
    assert OPTIMIZERS[name].multi_objective is True
    cfg = two_objectives(tmp_path, optimizer=name)
    options = {"n_startup_trials": 3} if name in ("optuna_tpe", "optuna_gp") else \
        {"population_size": 4} if name == "optuna_nsga2" else \
        {"n_init": 3, "raw_samples": 64, "num_restarts": 2} if name == "bo" else {}
    opt = make_optimizer(name, cfg.space.dim, np.random.default_rng(0), 8, options, n_objectives=2)
    seen = []
    for i in range(6):
        (c,) = opt.ask(1)
        seen.append(tuple(c.x))
        opt.tell(c, None if i == 2 else [float(c.x[0]), float(1 - c.x[0] + c.x[1])], None if i == 2 else [c.x[1] - 0.5])
    assert len(set(seen)) == 6 and all(0 <= v <= 1 for x in seen for v in x)
    if name == "bo":
        assert c.info["phase"] == "model"  # proposed by qLogNEHVI
        batch = opt.ask(2)  # a batch: the second point chosen with the first one pending
        assert [b.info["phase"] for b in batch] == ["model", "model"]
        assert not np.allclose(batch[0].x, batch[1].x)
        for b in batch:
            opt.tell(b, [float(b.x[0]), float(b.x[1])])
    again = make_optimizer(name, cfg.space.dim, np.random.default_rng(0), 8, options, n_objectives=2)
    again.load_state_dict(opt.state_dict())
    assert np.allclose(again.ask(1)[0].x, opt.ask(1)[0].x)  # saved and restored: the same continuation
    with pytest.raises(ValueError, match="optimises 2 objectives, told 1"):
        opt.tell(opt.ask(1)[0], [1.0])


def test_an_optimizer_without_constraints_is_told_an_infeasible_result_as_a_failure():
    opt = make_optimizer("random", 2, np.random.default_rng(0))
    a = opt.ask(1)[0]
    opt.tell(a, 1.0, [0.5])
    b = opt.ask(1)[0]
    opt.tell(b, 2.0, [-0.5])
    assert opt.y == [None, 2.0]
    # bo models the constraints: an infeasible result is data, its constraint values kept
    opt = make_optimizer("bo", 2, np.random.default_rng(0))
    a = opt.ask(1)[0]
    opt.tell(a, 1.0, [0.5])
    opt.tell(opt.ask(1)[0], None)
    assert opt.y == [1.0, None] and opt.cons == [[0.5], None]
    assert make_optimizer("bo", 2, np.random.default_rng(0)).handles_constraints


# ---------------------------------------------------------------- studies
@pytest.mark.slow  # two runs of an NSGA-II study, read back by Optuna and the CLI (~10 s)
def test_nsga2_study_end_to_end_resumes_and_is_read_by_optuna(tmp_path, capsys):
    from llmhpo.cli import app

    extra = "[[constraint]]\nmetric = \"regret\"\nmax = 100\n"
    cfg = two_objectives(tmp_path, trials=12, optimizer="optuna_nsga2", extra=extra, options="population_size = 6")
    first = run(cfg, progress=False, quiet=True)
    assert first.complete == 12 and first.best_value is None and first.pareto
    cfg = two_objectives(tmp_path, trials=24, optimizer="optuna_nsga2", extra=extra, options="population_size = 6")
    second = run(cfg, progress=False, quiet=True)
    assert second.complete == 24
    st = Study.load(cfg.study.storage, "two")
    records = st.records()
    assert len({tuple(r.attrs["x"]) for r in records}) == 24  # the resumed run repeats nothing
    assert all(r.values is not None and r.constraints is not None for r in records)
    front = st.pareto()
    assert second.pareto == [r.number for r in front] and second.hypervolume == pytest.approx(st.hypervolume())
    assert st.hypervolume() > 0
    for r in records:  # nothing feasible dominates a Pareto trial
        if r.feasible:
            assert not any(all(a <= b for a, b in zip(r.values, p.values)) and r.values != p.values for p in front)
    loaded = optuna.load_study(study_name="two", storage=cfg.study.storage)
    assert sorted(t.number for t in loaded.best_trials) == sorted(second.pareto)
    assert [d.name for d in loaded.directions] == ["MINIMIZE", "MINIMIZE"]
    db = cfg.study.storage[len("sqlite:///"):]
    for args in (["best", db, "--json"], ["status", db, "--json"]):
        with pytest.raises(SystemExit) as e:
            app(args)
        assert not e.value.code
        out = json.loads(capsys.readouterr().out)
        assert [p["number"] for p in out["pareto"]] == second.pareto
        assert out["hypervolume"] == pytest.approx(second.hypervolume)
    with pytest.raises(SystemExit):
        app(["best", db])
    shown = capsys.readouterr().out
    assert "Pareto set" in shown and "branin" in shown and "currin" in shown
    with pytest.raises(SystemExit) as e:
        app(["best", db, "--export", str(tmp_path / "out"), "--trial", str(second.pareto[-1])])
    assert not e.value.code
    assert json.loads((tmp_path / "out" / "best.json").read_text())["trial"] == second.pareto[-1]


def test_api_takes_metrics_and_directions_and_constraints(tmp_path):
    def f(x, y):
        return {"loss": x, "gain": y - x, "mem": 1 - x}

    space = [Float("x", 0, 1), Float("y", 0, 1)]
    s = llmhpo.optimize(f, space, trials=10, optimizer="sobol", metrics=["loss", "gain"],
                        directions=["minimize", "maximize"], storage=f"sqlite:///{tmp_path / 'a.db'}",
                        study_name="api", quiet=True)
    st = Study.load(f"sqlite:///{tmp_path / 'a.db'}", "api")
    assert s.pareto == [r.number for r in st.pareto()] and st.config.study.directions == ["minimize", "maximize"]
    with pytest.raises(ConfigError, match="one direction per metric"):
        llmhpo.optimize(f, space, trials=2, metrics=["loss", "gain"], directions=["minimize"])
    # one objective under a constraint: the best is the best feasible trial (mem <= 0.5: x >= 0.5)
    s = llmhpo.optimize(f, space, trials=12, optimizer="random", metric="loss", constraints=[{"metric": "mem", "max": 0.5}],
                        storage=f"sqlite:///{tmp_path / 'c.db'}", study_name="con", quiet=True)
    st = Study.load(f"sqlite:///{tmp_path / 'c.db'}", "con")
    done = [r for r in st.records() if r.state == "COMPLETE"]
    assert any(not r.feasible for r in done) and any(r.feasible for r in done)
    assert all(r.feasible == (r.params["x"] >= 0.5) for r in done)
    assert s.best_value == min(r.value for r in done if r.feasible) > min(r.value for r in done)


# a kind that scores a base model, as fine-tuning does, so that constraints relative to it run
@dataclass(frozen=True)
class BasedSpec:
    kind: ClassVar[str] = "based"
    base_seconds: float = 0.0  # how long scoring the base model takes

    def to_tables(self):
        return {"objective": {"base_seconds": self.base_seconds}}


class BasedObjective:
    def __init__(self, base_seconds=0.0):
        self.base_seconds = base_seconds

    def __call__(self, params, fidelity=None):
        x0, x1 = params["x0"], params["x1"]
        return Result(x0, {"acc": x0, "general": 0.5 - 0.1 * x1})

    def base(self):
        import time

        time.sleep(self.base_seconds)
        return Result(0.0, {"acc": 0.0, "general": 0.5})


class BasedKind(ObjectiveKind):
    name = "based"
    default_direction = "maximize"

    def parse(self, objective, tables, ctx):
        return BasedSpec(**objective)

    def default_space(self, spec):
        return SearchSpace([Float("x0", 0, 1), Float("x1", 0, 1)])

    def scores_base(self, spec):
        return True

    def factory(self, spec):
        import functools

        return functools.partial(BasedObjective, spec.base_seconds)


@pytest.mark.parametrize("runner", [
    {"executor": "inline"},
    # trials finish while the base model is still scored: they wait for its score
    pytest.param({"executor": "process", "workers": 2}, marks=pytest.mark.slow),
])
def test_constraint_relative_to_the_base_model_score(tmp_path, monkeypatch, runner):
    import llmhpo.objectives as objectives

    monkeypatch.setitem(objectives._KINDS, "based", f"{__name__}:BasedKind")
    base_seconds = 3.0 if runner["executor"] == "process" else 0.0  # trials finish first: they wait
    raw = {"study": {"name": "rel", "storage": f"sqlite:///{tmp_path / 'r.db'}"}, "budget": {"trials": 12},
           "optimizer": {"name": "optuna_tpe", "n_startup_trials": 4}, "objective": {"type": "based", "base_seconds": base_seconds},
           "runner": runner,
           "constraint": [{"metric": "general", "min": "base - 0.02"}]}  # general >= 0.48: x1 <= 0.2
    cfg = Config.from_dict(raw)
    summary = run(cfg, progress=False, quiet=True)
    st = Study.load(cfg.study.storage, "rel")
    assert st.base() == (0.0, {"acc": 0.0, "general": 0.5})
    done = [r for r in st.records() if r.state == "COMPLETE"]
    assert len(done) == 12
    for r in done:
        assert r.constraints == pytest.approx([0.48 - (0.5 - 0.1 * r.params["x1"])])
        assert r.feasible == (r.params["x1"] <= 0.2)
    feasible = [r for r in done if r.feasible]
    assert feasible and summary.best_value == max(r.value for r in feasible)
    if base_seconds:  # the first trial, done at once beside the base model's scoring, waited for its score
        assert done[0].end - done[0].start >= base_seconds - 0.5


def test_a_python_objective_of_several_objectives_from_toml_reads_its_dict_without_a_metric(tmp_path):
    """[study] objectives names the dict's keys: the objective's own value is the first's,
    as optimize(metrics=...) sets it (before, every trial failed asking for metric)."""
    (tmp_path / "f.py").write_text("def f(x):\n    return {'a': (x - 0.3) ** 2, 'b': (x - 0.7) ** 2}\n")
    (tmp_path / "s.toml").write_text(
        '[study]\nname = "s"\nstorage = "sqlite:///s.db"\nobjectives = [{ metric = "a", direction = "minimize" }, '
        '{ metric = "b", direction = "minimize" }]\n[budget]\ntrials = 3\n[optimizer]\nname = "random"\n'
        '[objective]\ntype = "python"\ntarget = "f.py:f"\n[space.x]\ntype = "float"\nlow = 0\nhigh = 1\n')
    cfg = load_config(tmp_path / "s.toml")
    assert cfg.objective.metric == "a"
    run(cfg, quiet=True)
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/s.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(t.values == [(t.params["x"] - 0.3) ** 2, (t.params["x"] - 0.7) ** 2] for t in trials)
