"""The bench protocol: shifted functions keep their optimum value, a run keeps its whole
history, the summary's statistics, and ``llmhpo bench`` options."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from llmhpo.lab.bench import (BenchRun, Spec, better_than, bootstrap_ci, markdown_table, min_paired_seeds, run_one,
                          summarise, vs_random_cell, vs_random_note)
from llmhpo.cli import app
from llmhpo.objectives.functions import FUNCTION_NAMES, get_function


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_shifted_function_keeps_its_optimum_value(name):
    f = get_function(name)
    assert f(f.x_opt) == pytest.approx(f.f_min, abs=1e-6)
    centres = []
    for seed in range(5):
        g = f.shifted(seed)
        u_opt = g.to_unit(g.x_opt)
        assert np.all((u_opt >= 0.1) & (u_opt <= 0.9))
        assert g(g.x_opt) == pytest.approx(f.f_min, abs=1e-6)
        # nowhere below the known minimum (it is the minimum over all of R^d)
        u = np.random.default_rng(seed).random((500, g.dim))
        assert min(g(g.from_unit(p)) for p in u) >= f.f_min - 1e-9
        centres.append(g(g.from_unit(np.full(g.dim, 0.5))))
        assert f.shifted(seed)(g.x_opt) == g(g.x_opt)  # same seed, same problem
    # the box centre is no longer the optimum (ackley's and rastrigin's minima sat there)
    assert min(centres) > f.f_min + 1e-6


def test_run_keeps_its_whole_history_and_budgets_come_from_it():
    run = run_one("branin", Spec("random", "random"), budget=30, seed=3)
    assert len(run.values) == len(run.ask_seconds) == len(run.wall) == 30
    assert run.wall == sorted(run.wall)
    curve = run.regret_curve()
    assert np.all(np.diff(curve) <= 0)
    assert run.best_regret(10) == pytest.approx(curve[9]) and run.best_regret() == pytest.approx(curve[-1])
    again = run_one("branin", Spec("random", "random"), budget=30, seed=3)
    assert again.values == run.values  # seeded: the same problem and the same run


def test_batch_mode_counts_evaluations():
    run = run_one("branin", Spec("soo", "soo"), budget=20, seed=0, batch=4)
    assert len(run.values) == 20


def _fake(opt, seed, regret):
    return BenchRun("f", opt, seed, 1, 0.0, [regret], [0.0], [0.1])


def test_summary_ranks_ci_and_test_against_random():
    rows = [_fake("good", s, 0.1 + 0.01 * s) for s in range(10)] + [_fake("random", s, 1.0 + s) for s in range(10)]
    rows += [_fake("same", s, 1.0 + s) for s in range(10)]
    summ = {r["optimizer"]: r for r in summarise(rows)}
    assert summ["good"]["mean_rank"] == 1.0
    assert summ["random"]["mean_rank"] == summ["same"]["mean_rank"] == 2.5  # ties share the mean rank
    assert summ["good"]["better_than_random"] and not summ["same"]["better_than_random"]
    lo, hi = summ["good"]["ci_low"], summ["good"]["ci_high"]
    assert lo <= summ["good"]["median_regret"] <= hi
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)
    assert not better_than([1, 2, 3], [1, 2, 3])[0]
    assert math.isinf(BenchRun("f", "x", 0, 1, 0.0, [None], [0.0], [0.1]).best_regret())


def test_cli_bench_options_batch_and_history(tmp_path):
    out = tmp_path / "b.json"
    r = CliRunner().invoke(app, ["bench", "--optimizers", "random,lhs,big=lhs", "--functions", "branin",
                                 "--budget", "12", "--seeds", "2", "--batch", "3", "--option", "big.size=100",
                                 "--json", str(out), "--markdown", "--plots", str(tmp_path / "fig")])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["batch"] == 3 and {o["label"] for o in data["optimizers"]} == {"random", "lhs", "big"}
    assert [o["options"] for o in data["optimizers"] if o["label"] == "big"] == [{"size": 100}]
    assert all(len(run["values"]) == 12 for run in data["runs"])
    assert set(data["summary_by_budget"]) == {"10", "12"} and {s["budget"] for s in data["summary"]} == {12}
    assert (tmp_path / "fig" / "branin.png").is_file()
    bad = CliRunner().invoke(app, ["bench", "--optimizers", "random", "--option", "bo.n_init=5"])
    assert bad.exit_code == 2 and "LABEL.KEY=VALUE" in bad.output


def test_vs_random_says_why_it_is_empty_with_few_seeds():
    assert min_paired_seeds() == 5  # 2^-4 = 0.0625 is above p = 0.05, 2^-5 is below
    assert better_than([0.0] * 5, [1.0] * 5)[0] and not better_than([0.0] * 4, [1.0] * 4)[0]
    few = summarise([_fake("good", s, 0.1) for s in range(2)] + [_fake("random", s, 1.0) for s in range(2)])
    cells = {r["optimizer"]: vs_random_cell(r) for r in few}
    assert cells == {"good": "n/a", "random": "-"}
    note = "vs random: needs at least 5 seeds for a paired test (ran 2); use --seeds 5 or more"
    assert vs_random_note(few) == note and markdown_table(few).endswith(note)
    enough = summarise([_fake("good", s, 0.1) for s in range(5)] + [_fake("same", s, 1.0) for s in range(5)]
                       + [_fake("random", s, 1.0) for s in range(5)])
    assert {r["optimizer"]: vs_random_cell(r) for r in enough} == {"good": "better", "same": "", "random": "-"}
    assert vs_random_note(enough) is None
    alone = summarise([_fake("good", s, 0.1) for s in range(5)])
    assert vs_random_cell(alone[0]) == "n/a" and "add random to --optimizers" in vs_random_note(alone)


def test_cli_bench_prints_why_vs_random_is_empty():
    r = CliRunner().invoke(app, ["bench", "--optimizers", "random,lhs", "--functions", "branin", "--budget", "4",
                                 "--seeds", "2"])
    assert r.exit_code == 0, r.output
    assert "vs random: needs at least 5 seeds for a paired test (ran 2)" in " ".join(r.output.split())


def test_cli_bench_dim_applies_to_functions_of_any_dimension_and_says_when_random_did_not_run():
    r = CliRunner().invoke(app, ["bench", "--optimizers", "lhs", "--functions", "branin,ackley", "--dim", "3",
                                 "--budget", "3", "--seeds", "1"])
    assert r.exit_code == 0, r.output
    assert "- (no random run)" in r.output and "1 shifted seed" in r.output
    bad = CliRunner().invoke(app, ["bench", "--optimizers", "lhs", "--functions", "branin", "--dim", "3"])
    assert bad.exit_code == 2 and "none of branin is defined in any dimension; drop --dim" in bad.output
