"""The report of a study of several objectives: the Pareto front (feasible and infeasible
trials apart, the front as a step line, the base model, trial numbers), pairwise panels for
three objectives, the hypervolume against trials and compute, the Pareto set as a table;
a single-objective report keeps its figures."""

import math

import matplotlib.pyplot as plt
import pytest

import llmhpo
from llmhpo.report import StudyData, Trial, build_report, write_report
from llmhpo.report._front import hypervolume_so_far, pareto, reference_point
from llmhpo.space import Float, SearchSpace
from llmhpo.study import Study


def gid(ax, name):
    return [a for a in ax.get_children() if a.get_gid() == name]


def offsets(ax, name):
    return sorted(tuple(map(float, p)) for a in gid(ax, name) for p in a.get_offsets())


def trade(x, y):
    """Task score against general knowledge, and memory (the constraint: y <= 0.7)."""
    return {"acc": 0.3 + 0.6 * x, "general": 0.5 - 0.2 * x ** 2 + 0.05 * y, "mem": 1 + y}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('front') / 'two.db'}"
    llmhpo.optimize(trade, [Float("x", 0, 1), Float("y", 0, 1)], trials=24, optimizer="sobol",
                    metrics=["acc", "general"], directions=["maximize", "maximize"],
                    constraints=[{"metric": "mem", "max": 1.7}], storage=db, study_name="two", quiet=True)
    Study.load(db, "two").set_base(0.33, {"acc": 0.33, "general": 0.36})
    return Study.load(db, "two")


def test_two_objective_front_draws_feasible_infeasible_front_base_and_numbers(two):
    sd = StudyData.of(two)
    assert sd.objectives == [("acc", "maximize"), ("general", "maximize")] and sd.base_values == [0.33, 0.36]
    rep = build_report([sd])
    assert rep.figure("history") is None  # the front and the hypervolume take its place
    ax = rep.figure("front").axes[0]
    records = [r for r in two.records() if r.state == "COMPLETE"]
    assert any(not r.feasible for r in records) and any(r.feasible for r in records)
    assert offsets(ax, "feasible") == sorted(tuple(r.values) for r in records if r.feasible)
    assert offsets(ax, "infeasible") == sorted(tuple(r.values) for r in records if not r.feasible)
    (hollow,) = gid(ax, "infeasible")
    assert hollow.get_facecolor().size == 0 or hollow.get_facecolor()[0][3] == 0  # hollow markers
    front = two.pareto()
    assert offsets(ax, "pareto") == sorted(tuple(r.values) for r in front)
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(r.number for r in front)
    assert offsets(ax, "base") == [(0.33, 0.36)]
    # the step line: acc falls and general rises along it, through every Pareto point
    (line,) = gid(ax, "front")
    xs, ys = list(line.get_xdata()), list(line.get_ydata())
    assert xs == sorted(xs, reverse=True) and ys == sorted(ys)
    assert {tuple(r.values) for r in front} <= set(zip(xs, ys))
    assert "higher is better" in ax.get_xlabel() and ax.get_xlabel().startswith("acc")
    rep.close()


def test_hypervolume_against_trials_and_compute_ends_at_the_studys(two):
    sd = StudyData.of(two)
    rep = build_report([sd])
    a_n, a_c = rep.figure("hypervolume").axes[:2]
    (hn,) = gid(a_n, "hypervolume")
    ys = list(hn.get_ydata())
    assert ys == sorted(ys) and ys[-1] == pytest.approx(two.hypervolume()) and ys[-1] > 0
    assert list(hn.get_xdata()) == [float(t.number) for t in sd.trials]
    assert "compute spent" in a_c.get_xlabel()
    assert [r.number for r in two.pareto()] == [t.number for t in pareto(sd)]
    assert reference_point(sd) == [v for v, _ in two.reference_point()]
    rep.close()


def test_pareto_table_facts_and_documents(two, tmp_path):
    page = write_report(two, tmp_path / "rep").read_text()
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert "front.png" in pngs and "hypervolume.png" in pngs and "history.png" not in pngs
    assert "importance.png" not in pngs  # Optuna's importance takes one objective: no figure of the wrong one
    rep = build_report([two])
    for kind in ("metrics", "params", "parallel"):  # no one best trial to star
        assert not any(gid(ax, "best") for ax in rep.figure(kind).axes)
    rep.close()
    md = (tmp_path / "rep" / "report.md").read_text()
    table = md.split("### Pareto set")[1].split("###")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    assert [int(r.split("|")[1]) for r in rows] == [r.number for r in two.pareto()]
    assert "| trial | acc | vs base | general | vs base | x | y | trial time |" in table
    front = two.pareto()
    assert f"{len(front)} trial(s): " + ", ".join(str(r.number) for r in front) in md
    assert f"{two.hypervolume():.4g} against (0.33, 0.36): the base model's values" in md
    feasible = sum(r.feasible for r in two.records() if r.state == "COMPLETE")
    assert f"{feasible} of 24 complete trials" in md and "best acc" not in md and page.count("<img") == len(pngs)
    assert "Parameter importance: not computed (Optuna's importance takes one objective)" in md


def test_three_objectives_get_a_panel_per_pair(tmp_path):
    def dtlz2(x, y, z):
        r = 1 + (z - 0.5) ** 2
        return {"f1": r * math.cos(x * math.pi / 2) * math.cos(y * math.pi / 2),
                "f2": r * math.cos(x * math.pi / 2) * math.sin(y * math.pi / 2), "f3": r * math.sin(x * math.pi / 2)}

    db = f"sqlite:///{tmp_path / 'three.db'}"
    llmhpo.optimize(dtlz2, [Float("x", 0, 1), Float("y", 0, 1), Float("z", 0, 1)], trials=16, optimizer="sobol",
                    metrics=["f1", "f2", "f3"], directions=["minimize"] * 3, storage=db, study_name="t", quiet=True)
    st = Study.load(db, "t")
    rep = build_report([st])
    axes = [a for a in rep.figure("front").axes if a.get_visible()]
    assert [(a.get_xlabel().split()[0], a.get_ylabel().split()[0]) for a in axes] == [
        ("f1", "f2"), ("f1", "f3"), ("f2", "f3")]
    front = st.pareto()
    for ax, (i, j) in zip(axes, [(0, 1), (0, 2), (1, 2)]):
        assert offsets(ax, "pareto") == sorted((r.values[i], r.values[j]) for r in front)
        assert not gid(ax, "front")  # a step line is a 2-D front's
    assert gid(rep.figure("hypervolume").axes[0], "hypervolume")[0].get_ydata()[-1] == pytest.approx(st.hypervolume())
    rep.close()


def test_hypervolume_so_far_by_hand():
    """Minimise both; reference: the worst feasible values (4, 4). An infeasible trial and a
    failure add nothing; trial 3 dominates trial 0."""
    def t(n, values, cons=None, state="COMPLETE", sec=10.0, end=None):
        return Trial(n, state, None if values is None else values[0], {"x": n / 10}, timings={"trial": sec}, end=end,
                     values=values, constraints=cons)

    trials = [t(0, [3, 3], [-1], end=1), t(1, [1, 4], [-1], end=2), t(2, [0, 0], [2], end=3),
              t(3, None, None, "FAIL", end=4), t(4, [2, 2], [-1], end=5), t(5, [4, 1], [0], end=6)]
    sd = StudyData("h", "random", "f", "minimize", "a", SearchSpace([Float("x", 0, 1)]), trials,
                   objectives=[("a", "minimize"), ("b", "minimize")])
    assert reference_point(sd) == [4, 4]
    assert [x.number for x in pareto(sd)] == [1, 4, 5]
    xs, hv = hypervolume_so_far(sd)
    assert xs == [0, 1, 2, 3, 4, 5] and hv == pytest.approx([1, 1, 1, 1, 4, 4])
    xc, hc = hypervolume_so_far(sd, "compute")
    assert xc == [10, 20, 30, 40, 50, 60] and hc == hv
    fig = build_report([sd]).figure("front")
    (line,) = gid(fig.axes[0], "front")
    assert list(zip(line.get_xdata(), line.get_ydata())) == [(1, 4), (2, 4), (2, 2), (4, 2), (4, 1)]
    plt.close("all")
