"""The runner and studies: parallel slots, failures, warm start, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from llmhpo.config import load_config
from llmhpo.runner import run

SLEEP = """
[study]
name = "sleepy"
seed = 3
[budget]
trials = {trials}
[runner]
workers = {workers}
[optimizer]
name = "{optimizer}"
[objective]
type = "sleep"
seconds = {seconds}
function = "branin"
log = "{log}"
"""


def study_tables_exist(db) -> bool:
    """Read-only: the driver has created its study. Opening the file with Optuna before that
    would create Optuna's tables from this process too, racing the driver's own creation."""
    import sqlite3

    if not db.exists():
        return False
    try:
        con = sqlite3.connect(db, timeout=1)  # not mode=ro: a read-only WAL reader in this process
        # can leave the file's shared memory mapped read-only for the connections that follow
        try:
            return con.execute("select count(*) from trials").fetchone() is not None
        finally:
            con.close()
    except sqlite3.Error:
        return False


def write(tmp_path, trials=8, optimizer="soo", seconds=0.3, workers=2, extra=""):
    p = tmp_path / "sleepy.toml"
    p.write_text(SLEEP.format(trials=trials, optimizer=optimizer, seconds=seconds, workers=workers,
                              log=tmp_path / "evals.jsonl") + extra)
    return p


def test_parallel_workers_run_concurrently_and_record_everything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, trials=8, seconds=0.5, workers=2, optimizer="bo"))
    s = run(cfg, progress=False)
    assert s.complete == 8
    study = optuna.load_study(study_name="sleepy", storage="sqlite:///sleepy.db")
    trials = study.trials
    assert len(trials) == 8
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) == 2
    # two workers overlap in time
    spans = sorted((t.user_attrs["worker"]["start"], t.user_attrs["worker"]["end"]) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
    t = trials[0]
    assert set(t.params) == {"x0", "x1"} and len(t.user_attrs["x"]) == 2
    assert "candidate" in t.user_attrs and "regret" in t.user_attrs["metrics"]
    assert t.datetime_start is not None and t.datetime_complete is not None


def test_failures_are_trial_states_and_the_study_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from dataclasses import replace

    cfg = load_config(write(tmp_path, trials=12, seconds=0.0, workers=1, optimizer="random",
                            extra="fail_above = 30.0\n"))
    s = run(replace(cfg, runner=replace(cfg.runner, max_repeated_failures=0)), progress=False)
    assert s.complete + s.failed == 12 and s.failed > 0 and s.complete > 0
    study = optuna.load_study(study_name="sleepy", storage="sqlite:///sleepy.db")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert all("above fail_above" in t.user_attrs["error"] for t in failed)


def test_warm_start_runs_first_and_is_told(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, trials=4, seconds=0.0, workers=1, optimizer="bo",
                            extra="[[warm_start]]\nx0 = 3.14159\nx1 = 2.275\n"))
    s = run(cfg, progress=False)
    study = optuna.load_study(study_name="sleepy", storage="sqlite:///sleepy.db")
    first = study.trials[0]
    assert first.user_attrs["warm_start"] == 0 and first.params["x0"] == pytest.approx(3.14159)
    assert s.best_value == pytest.approx(0.3979, abs=1e-3)
    state = json.loads(study._storage.get_study_system_attrs(study._study_id)["llmhpo:optimizer_state"])
    assert len(state["y"]) == 4  # the optimiser was told the warm-start value too
    # resuming does not evaluate the warm start again
    s2 = run(load_config(tmp_path / "sleepy.toml"), progress=False)
    assert s2.complete == 4 and len(optuna.load_study(study_name="sleepy", storage="sqlite:///sleepy.db").trials) == 4


def test_wall_time_budget_stops_asking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, trials=100, seconds=0.2, workers=1, optimizer="random",
                            extra="").__str__())
    from dataclasses import replace

    cfg = replace(cfg, budget=replace(cfg.budget, wall_time=3.0))
    s = run(cfg, progress=False)
    # 0.2 s trials in 3 s: at most 15 (a loaded machine's worker start-up can take 2 s of it)
    assert s.stopped == "wall_time" and 1 <= s.complete < 20


def test_grid_exhaustion_ends_the_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, trials=50, seconds=0.0, workers=1, optimizer="grid")
    p.write_text(p.read_text().replace('name = "grid"', 'name = "grid"\nlevels = 3'))
    s = run(load_config(p), progress=False)
    assert s.complete == 9 and s.stopped == "optimizer exhausted"


@pytest.mark.parametrize("optimizer", ["soo", "bo"])
@pytest.mark.slow  # a driver subprocess killed and rerun (10-14 s)
def test_sigkill_then_rerun_gives_exact_budget_nothing_twice(tmp_path, optimizer):
    budget = 10
    toml = write(tmp_path, trials=budget, seconds=0.4, workers=2, optimizer=optimizer)
    cmd = [sys.executable, "-m", "llmhpo.cli", "run", str(toml), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    db = tmp_path / "sleepy.db"
    deadline = time.time() + 60
    # kill once some trials are complete and others are running
    while time.time() < deadline:
        time.sleep(0.2)
        if study_tables_exist(db):
            try:
                st = optuna.load_study(study_name="sleepy", storage=f"sqlite:///{db}")
                states = [t.state.name for t in st.trials]
            except Exception:
                continue
            if states.count("COMPLETE") >= 3 and "RUNNING" in states:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(1.0)  # workers die with their parent
    before = optuna.load_study(study_name="sleepy", storage=f"sqlite:///{db}")
    done_before = {t.number: (t.params, t.value) for t in before.trials if t.state.name == "COMPLETE"}
    assert 3 <= len(done_before) < budget
    was_running = [t.number for t in before.trials if t.state.name == "RUNNING"]
    if optimizer == "bo":  # BO keeps both workers busy; SOO may be between sweeps
        assert was_running

    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    after = optuna.load_study(study_name="sleepy", storage=f"sqlite:///{db}")
    complete = [t for t in after.trials if t.state.name == "COMPLETE"]
    assert len(complete) == budget
    # completed trials kept as they were, none evaluated again
    for n, (params, value) in done_before.items():
        assert after.trials[n].state.name == "COMPLETE" and after.trials[n].value == value
    cand_ids = [t.user_attrs["candidate_id"] for t in complete]
    assert len(set(cand_ids)) == budget
    points = [tuple(t.user_attrs["x"]) for t in complete]
    assert len(set(points)) == budget
    interrupted = [t for t in after.trials if t.user_attrs.get("interrupted")]
    assert [t.number for t in interrupted] == was_running
    assert all(t.state.name == "FAIL" for t in interrupted)
    # each interrupted candidate was evaluated again, exactly once, to completion
    for t in interrupted:
        assert cand_ids.count(t.user_attrs["candidate_id"]) == 1


def test_optuna_reads_llmhpo_studies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(load_config(write(tmp_path, trials=3, seconds=0.0, workers=1, optimizer="random")), progress=False)
    st = optuna.load_study(study_name="sleepy", storage="sqlite:///sleepy.db")
    assert st.best_trial.value == min(t.value for t in st.trials)
    df = st.trials_dataframe()
    assert {"params_x0", "params_x1", "value"} <= set(df.columns)


def test_larger_budget_resumes_the_same_study(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, trials=5, seconds=0.0, workers=1, optimizer="direct"))
    first = run(cfg, progress=False)
    more = run(replace(cfg, budget=replace(cfg.budget, trials=9)), progress=False)
    assert first.complete == 5 and more.complete == 9
    st = optuna.load_study(study_name="sleepy", storage="sqlite:///sleepy.db")
    xs = [tuple(t.user_attrs["x"]) for t in st.trials]
    assert len(xs) == 9 and len(set(xs)) == 9  # DIRECT went on where it stopped


def test_sleep_durations_vary_by_point_and_draw():
    """``seconds_sigma``: lognormal durations of mean ``seconds``, fixed per point;
    ``seconds_seed`` gives another draw for the same points."""
    import numpy as np

    from llmhpo.objectives.synthetic import SleepSpec, sleep_seconds

    rng = np.random.default_rng(0)
    points = [{"x0": float(a), "x1": float(b)} for a, b in rng.random((4000, 2))]
    spec = SleepSpec(seconds=1.0, seconds_sigma=0.5)
    d = np.array([sleep_seconds(spec, p) for p in points])
    assert abs(d.mean() - 1.0) < 0.03 and abs(np.log(d).std() - 0.5) < 0.03
    assert [sleep_seconds(spec, p) for p in points[:5]] == list(d[:5])  # the same point, the same time
    other = np.array([sleep_seconds(SleepSpec(seconds=1.0, seconds_sigma=0.5, seconds_seed=3), p) for p in points])
    assert abs(other.mean() - 1.0) < 0.03 and np.corrcoef(np.log(d), np.log(other))[0, 1] < 0.1
    assert sleep_seconds(SleepSpec(seconds=2.0), points[0]) == 2.0
