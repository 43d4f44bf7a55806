"""``llmhpo report``: what each figure draws (points, labels, scales; failures never drawn
as values), the tables, the self-contained HTML page, several studies and multi-fidelity
studies, and ``best --json``."""

import json
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
from typer.testing import CliRunner

import llmhpo
from llmhpo.cli import app
from llmhpo.config import Config
from llmhpo.objectives import Result
from llmhpo.report import StudyData, Trial, build_report, write_report
from llmhpo.report._curves import plot_curves
from llmhpo.report._plots import FAIL_Y, importances
from llmhpo.runner import run
from llmhpo.study import Study

SPACE = {"learning_rate": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
         "lora_rank": {"type": "int", "low": 2, "high": 64, "log": True},
         "lora_dropout": {"type": "float", "low": 0.0, "high": 0.3},
         "scheduler": {"type": "categorical", "choices": ["linear", "cosine", "constant"]}}
BASE = {"hellaswag/acc_norm": 0.31, "hellaswag/acc": 0.29, "mmlu/acc": 0.41}


def finetune_like(learning_rate, lora_rank, lora_dropout, scheduler):
    """What a fine-tuning trial records (metrics, loss curve, timings), in microseconds;
    learning rates above 3e-3 diverge, as real ones do, with their loss curve so far."""
    steps = 20
    losses = [2.5 * math.exp(-k * learning_rate * 2000 / steps) + 0.6 for k in range(steps)]
    if learning_rate > 3e-3:
        e = llmhpo.TrialFailed("diverged at step 8 (loss nan)")
        e.metrics = {"train_loss_curve": losses[:8], "diverged_step": 8}
        raise e
    q = math.exp(-abs(math.log10(learning_rate) + 3.7))
    acc = 0.30 + 0.25 * q + 0.01 * lora_rank / 32 - 0.05 * lora_dropout + 0.01 * (scheduler == "cosine")
    return Result(acc, {"hellaswag/acc_norm": acc, "hellaswag/acc": acc - 0.03, "mmlu/acc": 0.42 - 0.05 * q,
                        "val_loss": losses[-1] + 0.1, "train_loss_curve": losses, "final_train_loss": losses[-1],
                        "train_steps": steps, "train_tokens_per_s": 5000.0 + lora_rank, "peak_memory_mb": 900.0,
                        "device": "cpu", "adapter_dir": f"/runs/adapters/{lora_rank}"},
                  {"model_load": 3.0, "setup": 3.5, "train": 40.0, "val_loss": 2.0, "eval": 25.0})


def _finetune_study(db, name, optimizer, trials):
    llmhpo.optimize(finetune_like, SPACE, trials=trials, optimizer=optimizer, direction="maximize",
                    metric="hellaswag/acc_norm", storage=f"sqlite:///{db}", study_name=name, quiet=True,
                    max_repeated_failures=0)
    st = Study.load(f"sqlite:///{db}", name)
    st.set_base(BASE["hellaswag/acc_norm"], BASE)
    return Study.load(f"sqlite:///{db}", name)


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    db = tmp_path_factory.mktemp("rep") / "ft.db"
    return _finetune_study(db, "ft-random", "random", 14), _finetune_study(db, "ft-soo", "soo", 9)


@pytest.fixture(scope="module")
def ft(studies):
    sd = StudyData.of(studies[0])
    assert sd.failed and len(sd.complete) >= 6, "the fixture needs failures and complete trials"
    return sd


def _config(tmp_path, objective: dict, optimizer="random", trials=12, extra=None) -> Config:
    raw = {"study": {"name": "s", "storage": str(tmp_path / "s.db")}, "budget": {"trials": trials},
           "runner": {"max_repeated_failures": 0}, "optimizer": {"name": optimizer}, "objective": objective,
           **(extra or {})}
    return Config.from_dict(raw, default_name="s", base_dir=tmp_path)


def gid(ax, name):
    """The artists of ``ax`` drawn with gid ``name``."""
    return [a for a in ax.get_children() if a.get_gid() == name]


def points(ax, name):
    """(x, y) of the series ``name`` of ``ax``: a scatter's offsets or a line's data."""
    out = []
    for a in gid(ax, name):
        if hasattr(a, "get_offsets"):
            out += [tuple(p) for p in np.asarray(a.get_offsets())]
        else:
            out += list(zip(a.get_xdata(), a.get_ydata()))
    return out


# ---------------------------------------------------------------------- history
def test_history_draws_values_best_so_far_base_and_failures_apart(ft):
    fig = build_report([ft]).figure("history")
    a_n, a_t = fig.axes[:2]
    done, failed = ft.complete, ft.failed
    assert sorted(points(a_n, "complete")) == sorted((float(t.number), t.value) for t in done)
    assert len(points(a_t, "complete")) == len(done)
    # failures: at their trial numbers on the strip (axes coordinates), never among the values
    fx = points(a_n, "failed")
    assert sorted(x for x, _ in fx) == [t.number for t in failed]
    assert {y for _, y in fx} == {FAIL_Y}
    assert not {t.number for t in failed} & {x for x, _ in points(a_n, "complete")}
    # the best so far only rises (maximize), ends at the best value and holds to the last trial
    bx, by = zip(*points(a_n, "best_so_far"))
    assert list(by) == sorted(by) and by[-1] == max(t.value for t in done)
    assert bx[-1] == max(t.number for t in ft.trials)
    assert points(a_n, "best") == [(float(ft.best().number), ft.best().value)]
    assert {y for _, y in points(a_n, "base")} == {BASE["hellaswag/acc_norm"]}
    assert "hellaswag/acc_norm" in a_n.get_ylabel() and "higher is better" in a_n.get_ylabel()
    assert a_n.get_xlabel() == "trial number" and "wall-clock" in a_t.get_xlabel()
    assert a_n.get_yscale() == "linear"  # accuracies do not span decades
    ticks = [t for t in a_n.get_xticks() if a_n.get_xlim()[0] <= t <= a_n.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close("all")


def test_two_trial_study_gets_integer_ticks_and_minimize_spanning_decades_gets_log(tmp_path):
    cfg = _config(tmp_path, {"type": "function", "name": "rosenbrock", "dim": 2}, trials=2)
    run(cfg, quiet=True)
    sd = StudyData.of(Study.load(cfg.study.storage, "s"))
    ax = build_report([sd]).figure("history").axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert ax.get_ylabel().startswith("rosenbrock(x)") and "lower is better" in ax.get_ylabel()
    cfg = _config(tmp_path, {"type": "sleep", "seconds": 0, "function": "rosenbrock", "dim": 2, "fail_above": 3e5},
                  trials=16, extra={"study": {"name": "f", "storage": str(tmp_path / "f.db")}})
    run(cfg, quiet=True)
    sd = StudyData.of(Study.load(cfg.study.storage, "f"))
    assert sd.failed and min(t.value for t in sd.complete) * 100 < max(t.value for t in sd.complete)
    rep = build_report([sd])
    ax = rep.figure("history").axes[0]
    assert ax.get_yscale() == "log"
    assert all(y <= 3e5 for _, y in points(ax, "complete"))  # failures are not values
    assert len(points(ax, "failed")) == len(sd.failed)
    # the regret (a metric) spans decades too: its panel is log as well
    mx = rep.figure("metrics")
    assert [a.get_title() for a in mx.axes if a.get_visible()] == ["regret"] and mx.axes[0].get_yscale() == "log"
    rep.close()


# ---------------------------------------------------------------------- other figures
def test_metric_panels_are_the_monitored_metrics_with_base_lines(ft):
    fig = build_report([ft]).figure("metrics")
    axes = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == ["hellaswag/acc", "mmlu/acc", "final_train_loss", "val_loss"]
    for ax in axes:
        assert len(points(ax, "complete")) == len(ft.complete)
    by = {a.get_title(): a for a in axes}
    assert {y for _, y in points(by["mmlu/acc"], "base")} == {0.41}
    assert not gid(by["val_loss"], "base")
    b = ft.best()
    assert points(by["mmlu/acc"], "best") == [(float(b.number), b.scalars["mmlu/acc"])]
    plt.close("all")


def test_loss_curves_best_highlighted_failures_dashed(ft):
    fig = build_report([ft]).figure("curves")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "training loss" and ax.get_xlabel() == "optimizer step"
    assert len(gid(ax, "trial")) == len(ft.complete) - 1
    assert len(gid(ax, "failed")) == len(ft.failed)
    assert all(line.get_linestyle() == "--" and len(line.get_xdata()) == 8 for line in gid(ax, "failed"))
    (best,) = gid(ax, "best")
    assert f"best trial {ft.best().number}" in best.get_label() and len(best.get_xdata()) == 20
    plt.close("all")


def test_params_panels_log_axes_categories_best_and_failures(ft):
    fig = build_report([ft]).figure("params")
    axes = [a for a in fig.axes if a.get_xlabel()]
    assert [a.get_xlabel() for a in axes] == ["learning_rate (log scale)", "lora_rank (log scale)", "lora_dropout",
                                              "scheduler"]
    assert [a.get_xscale() for a in axes] == ["log", "log", "linear", "linear"]
    assert [t.get_text() for t in axes[3].get_xticklabels()] == ["linear", "cosine", "constant"]
    b = ft.best()
    lr = axes[0]
    assert points(lr, "best") == [(b.params["learning_rate"], b.value)]
    assert sorted(x for x, _ in points(lr, "failed")) == sorted(t.params["learning_rate"] for t in ft.failed)
    assert all(x > 3e-3 for x, _ in points(lr, "failed"))
    assert all(x <= 3e-3 for x, _ in points(lr, "complete"))
    assert len(points(axes[3], "complete")) == len(ft.complete)
    w, h = fig.get_size_inches()
    assert w <= 14  # three panels across at most: fits a page
    plt.close("all")


def test_importance_is_optunas_and_parallel_coordinates_draw_each_complete_trial(ft):
    imp, how = importances(ft)
    assert how == "fANOVA" and set(imp) == set(SPACE) and abs(sum(imp.values()) - 1) < 1e-6
    rep = build_report([ft])
    (bars,) = [c for c in rep.figure("importance").axes[0].containers]
    assert len(bars) == len(SPACE)
    ax = rep.figure("parallel").axes[0]
    assert len(gid(ax, "trial")) == len(ft.complete) - 1 and len(gid(ax, "best")) == 1
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "hellaswag/acc_norm"
    assert f"{len(ft.failed)} failed, not drawn" in rep.figure("parallel")._suptitle.get_text()
    rep.close()


def test_few_trials_no_importance_and_no_crash(tmp_path):
    cfg = _config(tmp_path, {"type": "function", "name": "branin"}, trials=3)
    run(cfg, quiet=True)
    out = write_report(Study.load(cfg.study.storage, "s"), tmp_path / "rep")
    assert not (tmp_path / "rep" / "importance.png").exists()
    assert "needs at least 5 complete trials" in out.read_text()
    assert "Time split" not in out.read_text()  # a function times no phase: nothing to split


# ---------------------------------------------------------------------- tables and documents
def test_html_is_self_contained_with_tables(ft, tmp_path):
    path = write_report(ft, tmp_path / "rep")
    page = path.read_text()
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == ["curves.png", "history.png", "importance.png", "metrics.png", "parallel.png", "params.png"]
    assert page.count('<img src="data:image/png;base64,') == len(pngs)
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing to fetch: no file, no server, no script
    assert "<script" not in page
    assert page.count("diverged at step 8 (loss nan)") == len(ft.failed)
    assert "tokens/s" in page and "mmlu/acc" in page and "vs base" in page
    b = ft.best()
    assert f"{b.value:.4g} (trial {b.number})" in page and "over the base model" in page
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| trial |" in md and all(f"]({p})" in md for p in pngs)
    top = md.split("### Top")[1].split("###")[0]
    assert len([line for line in top.splitlines() if line.startswith("| ")]) == 1 + min(10, len(ft.complete))
    assert "| train | " in md and "| load | " in md and "| evaluate | " in md and "Time split" in md


@pytest.mark.slow  # three studies and their figures (9 s)
def test_several_studies_compared_on_the_same_axes(studies, tmp_path):
    rep = build_report(studies)
    fig = rep.figure("compare")
    a_n, a_c = fig.axes[:2]
    lines = gid(a_n, "best_so_far")
    assert [line.get_label().split(":")[0] for line in lines] == ["ft-random (random)", "ft-soo (soo)"]
    assert len(gid(a_c, "best_so_far")) == 2 and "CPU" in a_c.get_xlabel()
    for line, st in zip(lines, studies):
        sd = StudyData.of(st)
        assert len(line.get_xdata()) == len(sd.complete) and line.get_ydata()[-1] == sd.best().value
    assert {y for _, y in points(a_n, "base")} == {BASE["hellaswag/acc_norm"]}
    assert rep.figure("history", "ft-soo") is not None and rep.figure("history", "ft-random") is not None
    rep.close()
    import dataclasses
    import warnings

    with warnings.catch_warnings():  # four studies: more than matplotlib's 20 open figures, held on purpose
        warnings.simplefilter("error", RuntimeWarning)
        many = build_report([dataclasses.replace(StudyData.of(st), name=f"s{i}") for i, st in enumerate(studies * 2)])
    assert len(many.figures) > 20
    many.close()
    r = CliRunner().invoke(app, ["report", studies[0].config.study.storage, "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert "2 studies" in r.output
    names = {p.name for p in (tmp_path / "cmp").glob("*.png")}
    assert "compare.png" in names and "ft-soo-params.png" in names and "ft-random-history.png" in names
    r = CliRunner().invoke(app, ["report", studies[0].config.study.storage, "--study", "ft-soo",
                                 "--out", str(tmp_path / "one")])
    assert r.exit_code == 0 and (tmp_path / "one" / "history.png").exists()


def test_multi_fidelity_study_reports_pruned_trials_and_rungs(tmp_path):
    cfg = _config(tmp_path, {"type": "function", "name": "branin"}, trials=4,
                  extra={"fidelity": {"min": 1, "max": 9, "eta": 3, "scheduler": "asha"}})
    run(cfg, quiet=True)
    sd = StudyData.of(Study.load(cfg.study.storage, "s"))
    assert sd.of_state("PRUNED")
    rep = build_report([sd])
    ax = rep.figure("history").axes[0]
    assert len(points(ax, "pruned")) == len([t for t in sd.of_state("PRUNED", "WAITING") if t.rungs])
    curves = rep.figure("curves")
    assert curves.axes[0].get_title() == "score at each rung (multi-fidelity)"
    assert curves.axes[0].get_xlabel() == "steps (rung)"
    rep.close()
    assert write_report(sd, tmp_path / "rep").is_file()


def test_rung_scores_keep_every_configuration_visible():
    """Scores tie (an accuracy on a few hundred questions): each configuration is still a line
    of its own with a marker at each rung, set apart sideways near the rung, the best on top;
    the colour scale spans the scores drawn, not only the complete trials' few values."""
    tied = {4: 0.34, 12: 0.355, 36: 0.39}
    trials = [Trial(n, "COMPLETE", 0.39, {}, rungs=dict(tied)) for n in range(4)]
    trials += [Trial(4, "COMPLETE", 0.38, {}, rungs={4: 0.34, 12: 0.35, 36: 0.38}),
               Trial(9, "PRUNED", None, {}, rungs={4: 0.34, 12: 0.35})]
    trials += [Trial(n, "PRUNED", None, {}, rungs={4: 0.33}) for n in range(5, 9)]
    fig = plot_curves(StudyData("mf", "random", "f", "maximize", "acc", None, trials))
    ax = fig.axes[0]
    lines = gid(ax, "trial") + gid(ax, "pruned") + gid(ax, "best")
    assert len(lines) == len(trials) and len(gid(ax, "best")) == 1
    assert len({tuple(line.get_xdata()) for line in lines}) == len(trials)  # no two on top of each other
    for line in lines:
        assert line.get_marker() == "o"
        rungs = sorted(tied)[:len(line.get_xdata())]
        assert all(0.75 < x / r < 1.35 for x, r in zip(line.get_xdata(), rungs))
    assert gid(ax, "best")[0].get_zorder() > max(line.get_zorder() for line in lines[:-1])
    drawn = sorted(tuple(line.get_ydata()) for line in gid(ax, "trial"))
    assert drawn == [(0.34, 0.35, 0.38)] + [(0.34, 0.355, 0.39)] * 3  # the scores themselves are not moved
    (bar,) = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert bar.get_ylim() == pytest.approx((0.33, 0.39))
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["4", "12", "36"]
    plt.close("all")


def test_best_json_is_valid_json(studies):
    r = CliRunner().invoke(app, ["best", studies[0].config.study.storage, "--study", "ft-random", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    b = StudyData.of(studies[0]).best()
    assert d["number"] == b.number and d["value"] == b.value and d["study"] == "ft-random"
    assert d["params"]["scheduler"] in ("linear", "cosine", "constant")
    assert d["metrics"]["mmlu/acc"] == b.scalars["mmlu/acc"] and d["adapter_dir"] == b.adapter
    assert d["timings"]["train"] == 40.0 and d["exported"] is None
