"""``llmhpo best --pick``: one Pareto trial by weights (weighted Chebyshev distance to the
ideal point on objectives normalised over the Pareto set) or by bounds (then the best of the
first objective not bounded), shown, given as JSON and exported."""

import json

import pytest

from llmhpo.cli import app
from llmhpo.cli._pareto import parse_pick
from llmhpo.config import Config
from llmhpo.errors import LlmhpoError
from llmhpo.goals import Objective
from llmhpo.pareto import chebyshev_pick
from llmhpo.runner import run
from llmhpo.study import Study

OBJECTIVES = (Objective("branin", "minimize"), Objective("currin", "minimize"))


def test_chebyshev_pick_by_hand_reaches_a_concave_front_where_a_weighted_sum_cannot():
    Y = [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert chebyshev_pick(Y, [1, 0]) == 0 and chebyshev_pick(Y, [0, 1]) == 2 and chebyshev_pick(Y, [1, 1]) == 1
    # (0.8, 0.8) lies in a concave part: every weighted sum prefers an end, Chebyshev with equal weights takes it
    concave = [[0.0, 1.0], [0.8, 0.8], [1.0, 0.0]]
    assert chebyshev_pick(concave, [1, 1]) == 1
    assert all(min(range(3), key=lambda i: w * concave[i][0] + (1 - w) * concave[i][1]) != 1
               for w in (0.1, 0.3, 0.5, 0.7, 0.9))
    # units do not matter: the objectives are normalised over the set
    assert chebyshev_pick([[0, 1000], [50, 500], [100, 0]], [1, 1]) == 1
    # a tie on the largest term: the weighted sum decides ([0.5, 0] beats [0.5, 0.5])
    assert chebyshev_pick([[0.5, 0.5], [0.5, 0.0], [1.0, 1.0], [0.0, 0.0]], [1, 1]) == 3
    assert chebyshev_pick([[0.5, 0.5], [0.5, 0.0], [0.0, 1.0], [1.0, 0.0]], [1, 1]) == 1
    with pytest.raises(ValueError, match="need 2 weights >= 0"):
        chebyshev_pick(Y, [0, 0])


def test_pick_parses_weights_and_bounds():
    assert parse_pick("branin=0.7, currin=0.3", OBJECTIVES) == ({"branin": 0.7, "currin": 0.3}, [])
    assert parse_pick("regret<=5,currin>=-1e-3", OBJECTIVES) == ({}, [("regret", "<=", 5.0), ("currin", ">=", -0.001)])
    assert parse_pick("branin=1,timings.total<=2", OBJECTIVES) == ({"branin": 1.0}, [("timings.total", "<=", 2.0)])


@pytest.mark.parametrize("text, message", [
    ("branin:0.7", "is not metric=weight or metric>=bound"),
    ("acc=0.7", "weighs 'acc', which is not an objective; the objectives: branin, currin"),
    ("branin=-1", "must be given once and be >= 0"),
    ("branin=1,branin=2", "must be given once"),
    ("branin=0,currin=0", "all 0"),
    ("currin>0.5", "is not metric=weight"),
])
def test_bad_picks_are_one_line_errors(text, message):
    with pytest.raises(LlmhpoError, match=message) as e:
        parse_pick(text, OBJECTIVES)
    assert "\n" not in str(e.value)


def config(tmp_path, objectives: bool):
    study = {"name": "two", "storage": f"sqlite:///{tmp_path / 'two.db'}"}
    if objectives:
        study["objectives"] = [{"metric": o.metric, "direction": o.direction} for o in OBJECTIVES]
    return Config.from_dict({"study": study, "budget": {"trials": 16}, "optimizer": {"name": "sobol"},
                             "objective": {"type": "function", "name": "branin_currin" if objectives else "branin"}})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cfg = config(tmp_path_factory.mktemp("pick"), objectives=True)
    run(cfg, progress=False, quiet=True)
    st = Study.load(cfg.study.storage, "two")
    assert len(st.pareto()) >= 3, "the fixture needs a front of several trials"
    return cfg.study.storage[len("sqlite:///"):], st


def best(args, capsys):
    with pytest.raises(SystemExit) as e:
        app(["best", *args])
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_pick_by_weights_bounds_and_both_with_export(study, capsys, tmp_path):
    db, st = study
    front = st.pareto()
    lo_b = min(front, key=lambda r: r.values[0])
    code, out, _ = best([db, "--pick", "branin=1", "--json"], capsys)
    assert code == 0 and json.loads(out)["number"] == lo_b.number
    assert "weighted Chebyshev" in json.loads(out)["picked"]
    code, out, _ = best([db, "--pick", "currin=1", "--json"], capsys)
    assert json.loads(out)["number"] == min(front, key=lambda r: r.values[1]).number
    # equal weights: the trial nearest the ideal point, by hand
    b = [r.values[0] for r in front]
    c = [r.values[1] for r in front]
    u = [max((x - min(b)) / (max(b) - min(b)), (y - min(c)) / (max(c) - min(c))) for x, y in zip(b, c)]
    code, out, _ = best([db, "--pick", "branin=0.5,currin=0.5", "--json"], capsys)
    assert json.loads(out)["number"] == front[u.index(min(u))].number
    # a bound on the second objective, then the best branin among the trials that meet it
    cut = sorted(c)[len(c) // 2]
    meets = [r for r in front if r.values[1] <= cut]
    code, out, _ = best([db, "--pick", f"currin<={cut!r}"], capsys)
    want = min(meets, key=lambda r: r.values[0])
    assert code == 0 and f"trial {want.number} (Pareto set)" in out and "then the best branin" in out
    # a bound on a metric that is no objective (the regret each trial records), with --export
    code, out, _ = best([db, "--pick", "regret>=0,branin=1", "--export", str(tmp_path / "out")], capsys)
    assert code == 0 and "exported to" in out
    assert json.loads((tmp_path / "out" / "best.json").read_text())["trial"] == lo_b.number


def test_pick_refusals(study, capsys, tmp_path):
    db, st = study
    code, _, err = best([db, "--pick", "currin<=-100"], capsys)
    assert code == 2 and "no Pareto trial meets currin <= -100" in err and "loosen the bound" in err
    code, _, err = best([db, "--pick", "branin=1", "--trial", "0"], capsys)
    assert code == 2 and "give one" in err
    run(config(tmp_path, objectives=False), progress=False, quiet=True)
    code, _, err = best([str(tmp_path / "two.db"), "--pick", "value=1"], capsys)
    assert code == 2 and "this study has one objective; use --trial N" in err
