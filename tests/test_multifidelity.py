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


@pytest.mark.parametrize("scheduler, optimizer", [("sh", "random"), ("hyperband", "bo"), ("asha", "optuna_tpe")])
def test_every_scheduler_with_model_based_and_other_optimisers(tmp_path, monkeypatch, scheduler, optimizer):
    monkeypatch.chdir(tmp_path)
    s = run(load_config(write(tmp_path, budget="resource = 200", seconds=0.0, scheduler=scheduler,
                              optimizer=optimizer)), progress=False)
    assert s.stopped == "budget" and s.complete >= 1
    st = check_study(tmp_path)
    state = json.loads(st._storage.get_study_system_attrs(st._study_id)["llmhpo:optimizer_state"])
    assert not state["pending"]  # every configuration's start-rung score was told


def test_asha_keeps_every_worker_busy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(load_config(write(tmp_path, budget="resource = 300", seconds=1.0, workers=2)), progress=False)
    e = sorted(evals(tmp_path), key=lambda x: x["start"])
    assert max(x["end"] for x in e) - min(x["start"] for x in e) > 2
    # a freed worker gets its next job at once (a promotion or a new configuration), until the
    # budget is committed; the objective's log is written after its sleep, so allow the
    # driver's bookkeeping between one job's end and the next one's start
    starts = [x["start"] for x in e]
    committed = 0.0
    for x in sorted(e, key=lambda x: x["end"]):
        committed += x["trained"]
        if committed > 300 - 36:  # near the end the budget, not the scheduler, stops new jobs
            break
        assert any(x["end"] - 0.05 <= t <= x["end"] + 0.5 for t in starts), x
    # both workers ran jobs at the same time
    assert any(a["start"] < b["end"] and b["start"] < a["end"] and a["pid"] != b["pid"]
               for a, b in zip(e, e[1:]))


def test_sigkill_then_rerun_loses_and_repeats_nothing(tmp_path):
    toml = write(tmp_path, budget="resource = 250", seconds=0.8, workers=2)
    cmd = [sys.executable, "-m", "llmhpo.cli", "run", str(toml), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    db = tmp_path / "mf.db"
    deadline = time.time() + 90
    while time.time() < deadline:  # kill once some configuration has been promoted
        time.sleep(0.2)
        if not db.exists():
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
