"""``[fidelity] model = "all_rungs"``: the GP over (configuration, rung) fitted on every rung's
scores predicts the top rung where curves cross, ranks promotions by that prediction,
proposes new configurations, and is saved and restored with the optimiser."""

import json

import numpy as np
import pytest

from llmhpo.config import load_config
from llmhpo.errors import ConfigError
from llmhpo.optimizers import make_optimizer
from llmhpo.runner import run
from llmhpo.runner.resume import Conf
from llmhpo.runner.rungs_model import AcrossRungs
from llmhpo.schedulers import ASHA, Job

from test_multifidelity import check_study, write  # noqa: E402

RUNGS = [1.0, 3.0, 9.0]  # s = 0, 0.5, 1


def crossing(x: float, s: float) -> float:
    """Curves that cross: a low x scores best early, a high x best at the top rung."""
    return (1.0 - s) * x + s * (1.0 - x)


def _study_of_crossing_curves():
    """ASHA with seven configurations scored at every rung, and two at rung 0 only: A
    (x = 0.1, best at rung 0, worst at the top) and B (x = 0.9, the reverse)."""
    opt = make_optimizer("bo", 1, np.random.default_rng(0), 50, {"n_init": 5})
    sched = ASHA(RUNGS, 3)
    confs = {}
    xs = [*np.linspace(0.2, 0.8, 7), 0.1, 0.9]
    for cid, x in enumerate(xs):
        confs[cid] = Conf(cid, cid, {"x": x}, {}, np.array([x]))
        sched.add(cid, Job(0, 0))
        top = 2 if cid < 7 else 0
        for k in range(top + 1):
            if k:
                sched.started(cid, k)
            sched.finished(cid, k, crossing(x, k / 2))
    return opt, sched, confs, 7, 8  # A's id, B's id


def test_the_model_predicts_the_top_rung_and_promotes_what_ends_best():
    opt, sched, confs, a, b = _study_of_crossing_curves()
    assert sched.next_job() == Job(1, 0, a)  # by rung-0 scores: A, the one that ends worst
    across = AcrossRungs(opt, sched, confs, RUNGS)
    across.update()
    pred = {cid: -sched.predicted[cid] for cid in (a, b)}  # the model's warped units, higher is better
    assert pred[b] > pred[a]
    # the prediction at the top rung ranks every configuration as its final score does
    finals = {cid: crossing(confs[cid].x[0], 1.0) for cid in sched.configs}
    order = sorted(sched.predicted, key=sched.predicted.get)
    assert order[:3] == sorted(finals, key=finals.get)[:3]
    assert sched.next_job() == Job(1, 0, b)  # by the model: B, the one that ends best


def test_a_proposal_is_new_and_a_restored_optimiser_proposes_the_same():
    opt, sched, confs, _, b = _study_of_crossing_curves()
    across = AcrossRungs(opt, sched, confs, RUNGS)
    across.update()
    state = json.loads(json.dumps(opt.state_dict()))
    assert state["rungs_gp"]["hyper"]  # the fitted hyperparameters are part of the state
    # one more score: too few to refit, so the saved hyperparameters condition the next model
    sched.started(b, 1)
    sched.finished(b, 1, crossing(0.9, 0.5))
    across.update()
    predicted = dict(sched.predicted)
    x = across.propose([np.array([0.95])])
    assert x.shape == (1,) and all(abs(x[0] - c.x[0]) > 1e-6 for c in confs.values())
    other = make_optimizer("bo", 1, np.random.default_rng(123), 50, {"n_init": 5})
    other.load_state_dict(state)
    again = AcrossRungs(other, sched, confs, RUNGS)
    again.update()  # (a fresh fit's predictions differ by about 1e-3)
    assert sched.predicted == predicted
    np.testing.assert_allclose(again.propose([np.array([0.95])]), x)
    # hyperparameters a study saved with the first (stationary) kernel are not this kernel's
    old = dict(state["rungs_gp"])
    old.pop("rungs")
    other.load_state_dict({**state, "rungs_gp": old})
    assert not other.rungs_gp.hyper and other.rungs_gp.hyper_n == 0


def test_a_variable_that_sets_the_learning_speed_does_not_set_the_predicted_end():
    """x1 sets where a configuration ends, x0 how fast it gets there: the gap kernel learns the
    two apart, and ranks unseen configurations' top-rung scores by x1 better than one
    stationary kernel over (x, s), which carries rung 0's speed effect to the top rung."""
    from scipy.stats import spearmanr

    from llmhpo.optimizers._fidelity_gp import RungsGP

    def score(x, s):
        return (x[1] - 0.3) ** 2 + 2.0 * (1.0 - s) * (1.0 - x[0]) ** 2

    rank = {"gap": [], "stationary": []}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        Z, y = [], []
        for i, x in enumerate(rng.random((20, 2))):  # 5 reach the top rung, 5 the middle one
            for s in (0.0, 0.5, 1.0)[:3 if i < 5 else 2 if i < 10 else 1]:
                Z.append([*x, s])
                y.append(score(x, s))
        test = rng.random((200, 2))
        for kind in rank:
            gp = RungsGP(rungs=kind)
            gp.fit(np.array(Z), np.array(y))
            rank[kind].append(spearmanr(-gp.top_mean(test), (test[:, 1] - 0.3) ** 2)[0])
    assert min(rank["gap"]) > 0.85
    assert np.mean(rank["gap"]) > np.mean(rank["stationary"]) + 0.02


def _all_rungs(tmp_path, budget: str, scheduler: str = "asha", keys: str = 'model = "all_rungs"\npromote = "model"'):
    p = write(tmp_path, budget=budget, seconds=0.0, workers=1, optimizer="bo", scheduler=scheduler)
    p.write_text(p.read_text() + keys + "\n")
    return load_config(p)


@pytest.mark.parametrize("scheduler, keys", [("asha", 'model = "all_rungs"\npromote = "model"'),
                                             ("hyperband", 'model = "all_rungs"'), ("hyperband", 'promote = "model"')])
def test_a_study_learns_across_rungs_and_resumes_without_repeats(tmp_path, monkeypatch, scheduler, keys):
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    cfg = _all_rungs(tmp_path, "resource = 250", scheduler, keys)
    first = run(cfg, progress=False, quiet=True)
    more = run(replace(cfg, budget=replace(cfg.budget, resource=450.0)), progress=False, quiet=True)
    assert first.stopped == more.stopped == "budget" and more.resource_spent > first.resource_spent
    st = check_study(tmp_path)
    cands = [t.user_attrs["candidate"] for t in st.trials]
    if "all_rungs" in keys:  # proposals from the model of every rung
        assert sum(c.get("model") == "all_rungs" for c in cands) >= 5
    else:  # promotions only: Hyperband's proposals stay BOHB's
        assert any("model_rung" in c for c in cands) and not any("model" in c for c in cands)
    params = [tuple(sorted(t.params.items())) for t in st.trials]
    assert len(set(params)) == len(params)  # every proposal a new configuration, across both runs
    state = json.loads(st._storage.get_study_system_attrs(st._study_id)["llmhpo:optimizer_state"])
    assert state["rungs_gp"]["hyper"] and not state["pending"]


@pytest.mark.parametrize("key, value", [("model", "all_rungs"), ("promote", "model")])
def test_all_rungs_config_errors(tmp_path, key, value):
    p = write(tmp_path, optimizer="random")
    p.write_text(p.read_text() + f'{key} = "{value}"\n')
    with pytest.raises(ConfigError, match=rf'{key} = "{value}" needs a GP .* optimizer \'random\'.*name = "bo"'):
        load_config(p)
    p.write_text(p.read_text().replace(f'"{value}"', f'"{value}s"').replace('"random"', '"bo"'))
    with pytest.raises(ConfigError, match=rf"{key} = '{value}s' is unknown \(did you mean '{value}'\?\)"):
        load_config(p)
    p.write_text(p.read_text().replace(f'"{value}s"', "true"))
    with pytest.raises(ConfigError, match=rf"{key} = true must be a string"):  # TOML's word, not Python's
        load_config(p)


def test_the_default_model_stays_out_of_the_stored_table(tmp_path):
    from llmhpo.config import Config

    cfg = load_config(write(tmp_path, optimizer="bo"))
    assert (cfg.fidelity.model, cfg.fidelity.promote) == ("one_rung", "score")
    assert not {"model", "promote"} & set(cfg.to_dict()["fidelity"])
    cfg = _all_rungs(tmp_path, "trials = 5")
    assert Config.from_dict(cfg.to_dict(), base_dir=tmp_path).fidelity == cfg.fidelity
    assert cfg.to_dict()["fidelity"]["model"] == "all_rungs" and cfg.to_dict()["fidelity"]["promote"] == "model"


def test_the_bench_runs_the_model_as_a_method_and_checks_its_name():
    from typer.testing import CliRunner

    from llmhpo.cli import app
    from llmhpo.lab.bench import _mf_row, mf_method, summarise_mf

    assert mf_method("asha:bo+all_rungs+promote") == ("asha", "bo", {"model": "all_rungs", "promote": "model"})
    assert mf_method("bo") == ("", "bo", {})
    with pytest.raises(ValueError, match="unknown \\+rungs; use \\+all_rungs or \\+promote"):
        mf_method("asha:bo+rungs")
    rows = [_mf_row("branin", m, 4, 0, 1, 9, 3, 0.0) for m in ("bo", "asha:bo+all_rungs+promote")]
    assert rows[1].trace and rows[1].trace[-1][0] <= 4 * 9
    assert [s["method"] for s in summarise_mf(rows, "bo")] == ["bo", "asha:bo+all_rungs+promote"]
    r = CliRunner().invoke(app, ["bench", "--scheduler", "asha", "--optimizers", "random+all_rungs",
                                 "--budget", "2", "--seeds", "1"])
    assert r.exit_code == 2 and "with bo only: e.g. bo+all_rungs" in r.output
    r = CliRunner().invoke(app, ["bench", "--optimizers", "bo+promote", "--budget", "2", "--seeds", "1"])
    assert r.exit_code == 2 and "+promote models rungs; add --scheduler asha" in r.output
    r = CliRunner().invoke(app, ["bench", "--scheduler", "none", "--optimizers", "bo+all_rungs", "--budget", "2"])
    assert r.exit_code == 2 and "--scheduler none has no rungs for +all_rungs" in r.output
