"""Multi-fidelity studies end to end on the sleep objective's learning curves: rungs stored
as intermediate values, PRUNED / COMPLETE states, only extra steps trained, resume after
SIGKILL, busy workers under ASHA, every scheduler with a model-based optimiser."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import optuna
import pytest

from llmhpo.config import load_config
from llmhpo.errors import ConfigError
from llmhpo.runner import run

from test_runner import study_tables_exist  # noqa: E402

STUDY = """
[study]
name = "mf"
seed = 1
[budget]
{budget}
[runner]
workers = {workers}
[optimizer]
name = "{optimizer}"
[objective]
type = "sleep"
seconds = {seconds}
function = "branin"
log = "evals.jsonl"
[fidelity]
min = 4
max = 36
scheduler = "{scheduler}"
"""


def write(tmp_path, budget="trials = 5", workers=2, optimizer="random", seconds=0.3, scheduler="asha"):
    p = tmp_path / "mf.toml"
    p.write_text(STUDY.format(budget=budget, workers=workers, optimizer=optimizer, seconds=seconds,
                              scheduler=scheduler))
    return p


def evals(tmp_path):
    return [json.loads(ln) for ln in (tmp_path / "evals.jsonl").read_text().splitlines()]


def check_study(tmp_path, rungs=(4, 12, 36)):
    st = optuna.load_study(study_name="mf", storage=f"sqlite:///{tmp_path / 'mf.db'}")
    states = {t.state.name for t in st.trials}
    assert states <= {"COMPLETE", "PRUNED", "FAIL"}, states  # nothing left WAITING or RUNNING
    for t in st.trials:
        assert set(t.intermediate_values) <= set(rungs) and t.intermediate_values
        if t.state.name == "COMPLETE":
            assert max(t.intermediate_values) == 36 and t.value == t.intermediate_values[36]
    # a configuration trains each step once: its extra steps at each rung add up to its top rung
    trained = defaultdict(float)
    for e in evals(tmp_path):
        trained[tuple(sorted(e["params"].items()))] += e["trained"]
    for t in st.trials:
        key = tuple(sorted(t.params.items()))
        assert trained[key] == max(t.intermediate_values), (t.number, trained[key], t.intermediate_values)
    return st


@pytest.mark.slow  # a study in worker processes, killed and rerun (6-14 s)
def test_asha_study_stores_rungs_prunes_and_trains_only_extra_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, budget="trials = 5", seconds=0.2))
    s = run(cfg, progress=False)
    assert s.stopped == "budget" and s.resource_spent <= 5 * 36 and s.resource_spent > 4 * 36
    st = check_study(tmp_path)
    promoted = [t for t in st.trials if len(t.intermediate_values) > 1]
    assert promoted and any(t.state.name == "COMPLETE" for t in st.trials)
    assert sum(t.state.name == "PRUNED" for t in st.trials) > len(promoted) - 1
    # continued jobs say so, and the status shows the resource spent
    e = evals(tmp_path)
    assert any(x["trained"] == 8 and x["steps"] == 12 for x in e) and any(x["trained"] == 24 for x in e)
    r = subprocess.run([sys.executable, "-m", "llmhpo.cli", "status", "mf.toml"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert "steps: " in r.stdout and "spent of 180" in r.stdout and "pruned" in r.stdout
    # a job a stop cut short waits to go on from its checkpoint, and the status says so
    from llmhpo.study import Study

    study = Study.load(f"sqlite:///{tmp_path / 'mf.db'}", "mf")
    study.cut_short(study.storage.create_new_trial(study.optuna_study._study_id), 1)  # a job that was running
    r = subprocess.run([sys.executable, "-m", "llmhpo.cli", "status", "mf.toml", "--last", "100"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert "1 waiting (1 cut short by a stop: a resume goes on from their checkpoints)" in r.stdout, r.stdout
    assert "CUT SHORT" in r.stdout and "model one_rung, promote by score" in r.stdout


@pytest.mark.parametrize("scheduler, optimizer", [("sh", "random"), ("hyperband", "bo"), ("asha", "optuna_tpe")])
def test_every_scheduler_with_model_based_and_other_optimisers(tmp_path, monkeypatch, scheduler, optimizer):
    monkeypatch.chdir(tmp_path)
    s = run(load_config(write(tmp_path, budget="resource = 200", seconds=0.0, scheduler=scheduler,
                              optimizer=optimizer)), progress=False)
    assert s.stopped == "budget" and s.complete >= 1
    st = check_study(tmp_path)
    state = json.loads(st._storage.get_study_system_attrs(st._study_id)["llmhpo:optimizer_state"])
    # every configuration's start-rung score was told; a candidate asked for a worker that a
    # promotion took, and left when the budget ran out, has no trial (a later run starts it)
    started = {t.user_attrs["candidate_id"] for t in st.trials}
    assert not [p for p in state["pending"] if p["id"] in started]
    assert len(state["pending"]) <= 2  # at most one per worker
    if scheduler == "hyperband" and optimizer != "random":  # BOHB: proposals from one rung's model
        assert any("model_rung" in t.user_attrs["candidate"] for t in st.trials)


def test_asha_keeps_every_worker_busy(tmp_path, monkeypatch):
    """Whenever the runner waits for a result, every worker has a job, until the budget is
    committed: ASHA always has a promotion or a new configuration for a free worker."""
    import llmhpo.runner.start as runner_mod
    from llmhpo.executors import run_objective

    seen = []

    class CountingExecutor:  # runs jobs inline, finishing them in a shuffled order
        slots = 3
        retries = []

        def __init__(self, factory, *args):
            self.objective, self.jobs = factory(), []

        def workers(self):
            return [{"trial": key} for key, _, _ in self.jobs]

        def submit(self, key, params, fidelity=None):
            self.jobs.append((key, params, fidelity))

        def wait(self, timeout=None):
            seen.append(len(self.jobs))
            key, params, fidelity = self.jobs.pop(len(self.jobs) // 2)
            return [run_objective(self.objective, key, params, fidelity)]

        def close(self):
            pass

    monkeypatch.setattr(runner_mod, "make_executor", lambda factory, *a: CountingExecutor(factory))
    monkeypatch.chdir(tmp_path)
    s = run(load_config(write(tmp_path, budget="resource = 400", seconds=0.0, workers=3)), progress=False)
    assert s.stopped == "budget"
    full = len(seen) - seen[::-1].index(3)  # after the last full wait only the budget's tail drains
    assert seen[:full] == [3] * full and full > 40, seen
    assert seen[full:] == sorted(seen[full:], reverse=True)  # then the jobs drain, none started
    check_study(tmp_path)


@pytest.mark.slow  # a study in worker processes, killed and rerun (6-14 s)
def test_sigkill_then_rerun_loses_and_repeats_nothing(tmp_path):
    toml = write(tmp_path, budget="resource = 250", seconds=0.8, workers=2)
    cmd = [sys.executable, "-m", "llmhpo.cli", "run", str(toml), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    db = tmp_path / "mf.db"
    deadline = time.time() + 90
    while time.time() < deadline:  # kill once some configuration has been promoted
        time.sleep(0.2)
        if not study_tables_exist(db):
            continue
        try:
            st = optuna.load_study(study_name="mf", storage=f"sqlite:///{db}")
            if any(len(t.intermediate_values) >= 2 for t in st.trials) and \
                    any(t.state.name == "RUNNING" for t in st.trials):
                break
        except Exception:
            continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(1.0)
    before = optuna.load_study(study_name="mf", storage=f"sqlite:///{db}")
    kept = {t.number: dict(t.intermediate_values) for t in before.trials}
    assert any(t.state.name == "RUNNING" for t in before.trials)
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    after = check_study(tmp_path)  # every step trained once, across both runs
    for n, values in kept.items():  # nothing lost
        assert {k: v for k, v in after.trials[n].intermediate_values.items() if k in values} == values
    assert sum(max(t.intermediate_values) for t in after.trials) <= 250


def test_fidelity_config_errors(tmp_path):
    base = write(tmp_path).read_text()
    cases = {
        base.replace("min = 4", "min = 40"): "need 0 < min < max",
        base.replace("min = 4", "min = 20"): "is below eta = 3",
        base.replace('scheduler = "asha"', 'scheduler = "bohb"'): "scheduler = 'bohb' is unknown",
        base.replace("max = 36", 'max = 36\nresource = "epochs"'): "resource = 'epochs' is not one",
        base.replace("[fidelity]\nmin = 4\nmax = 36\nscheduler = \"asha\"\n", ""
                     ).replace("trials = 5", "resource = 100"): "[budget] resource needs a [fidelity] table",
    }
    for text, message in cases.items():
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(ConfigError) as e:
            load_config(tmp_path / "bad.toml")
        assert message in str(e.value)


@pytest.mark.parametrize("scheduler", ["asha", "sh", "hyperband"])
def test_a_larger_budget_resumes_the_study(tmp_path, monkeypatch, scheduler):
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, budget="resource = 100", seconds=0.0, scheduler=scheduler, workers=1))
    first = run(cfg, progress=False)
    more = run(replace(cfg, budget=replace(cfg.budget, resource=300.0)), progress=False)
    assert first.stopped == more.stopped == "budget" and more.resource_spent > first.resource_spent
    check_study(tmp_path)


def _curve(x, fidelity):
    return {"loss": (x - 0.3) ** 2 + 1.0 / fidelity.value, "resource_trained": fidelity.value}


def test_a_rerun_whose_left_budget_fits_no_job_says_the_budget_is_met(tmp_path, capsys):
    """Hyperband's next bracket needs more than the 3 steps left: the rerun spends nothing and
    says how to run more, as a rerun of a study with nothing left does."""
    import llmhpo

    kw = dict(resource=54, metric="loss", optimizer="random", progress=False, study_name="t",
              fidelity={"min": 1, "max": 9, "scheduler": "hyperband"}, storage=f"sqlite:///{tmp_path}/t.db")
    first = llmhpo.optimize(_curve, [llmhpo.Float("x", 0, 1)], **kw)
    capsys.readouterr()
    again = llmhpo.optimize(_curve, [llmhpo.Float("x", 0, 1)], **kw)
    assert again.resource_spent == first.resource_spent < 54
    out = " ".join(capsys.readouterr().out.split())
    assert f"has met its budget ({first.resource_spent:g} of 54 steps; its last run ended with " \
        f"{54 - first.resource_spent:g} left, too little for its next job)" in out
    assert "raise [budget] resource to run more" in out


def test_overwrite_starts_afresh_without_the_old_checkpoints(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, budget="resource = 60", seconds=0.0, workers=1))
    run(cfg, progress=False, quiet=True)
    (tmp_path / "evals.jsonl").unlink()
    other = replace(cfg, study=replace(cfg.study, seed=7))
    run(other, progress=False, quiet=True, overwrite=True)
    check_study(tmp_path)  # every configuration of the new study trained all its own steps


def test_the_run_says_what_it_spent_and_why_the_rest_is_left(tmp_path, monkeypatch):
    import re

    from typer.testing import CliRunner

    from llmhpo.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mf.toml").write_text('[study]\nname = "mf"\nstorage = "sqlite:///mf.db"\n[budget]\nresource = 55\n'
                                      '[optimizer]\nname = "random"\n[objective]\ntype = "function"\nname = "branin"\n'
                                      '[fidelity]\nmin = 1\nmax = 9\neta = 3\n')
    r = CliRunner().invoke(app, ["run", "mf.toml", "--no-progress"])
    assert r.exit_code == 0, r.output
    m = re.search(r"stopped by budget \((\d+) of 55 steps(?:; the next (job|promotion) does not fit in the (\d+) left)?\)", r.output)
    assert m, r.output
    spent = int(m.group(1))
    assert spent <= 55 and (spent == 55) == (m.group(3) is None)
    assert m.group(3) is None or int(m.group(3)) == 55 - spent
    assert m.group(2) in (None, "promotion" if 55 - spent >= 1 else "job")  # rung 0 is 1 step: any left fits one
    trials = len(optuna.load_study(study_name="mf", storage="sqlite:///mf.db").trials)
    again = CliRunner().invoke(app, ["run", "mf.toml", "--no-progress"])  # the same budget: nothing to do
    assert again.exit_code == 0 and "has met its budget" in again.output, again.output
    assert f"stopped by budget ({spent} of 55 steps" in again.output
    assert len(optuna.load_study(study_name="mf", storage="sqlite:///mf.db").trials) == trials
