"""Tracking tools: ``[logging]`` in the config (never part of the search hash), an MLflow
run per trial read back through ``mlflow.search_runs``, TensorBoard event files, a W&B
logger (a stand-in module: wandb is optional), and a failing tool that does not stop the
study."""

import math
import sys
import types

import pytest

import llmhpo
from llmhpo.config import Config, load_config
from llmhpo.errors import ConfigError
from llmhpo.objectives import Result
from llmhpo.runner import run
from llmhpo.study import Study
from llmhpo._metrics import split_metrics
from llmhpo.tracking import Tracker, TrialLog, open_trackers

FUNCTION_STUDY = """
[study]
name = "fn"
[budget]
trials = 3
[optimizer]
name = "random"
[objective]
type = "function"
name = "branin"
[logging]
mlflow = true
tensorboard = "tb"
"""


def trained(learning_rate, lora_rank):
    """A fine-tuning-like trial: a loss curve, benchmark metrics, an adapter; lr > 1e-2 diverges."""
    losses = [2.0 * math.exp(-0.2 * k) + 0.5 for k in range(12)]
    if learning_rate > 1e-2:
        e = llmhpo.TrialFailed("diverged at step 5 (loss nan)")
        e.metrics = {"train_loss_curve": losses[:5]}
        raise e
    return Result(0.3 + learning_rate * 10, {"mmlu/acc": 0.4, "val_loss": 0.7, "train_loss_curve": losses,
                                             "adapter_dir": f"/runs/adapters/{lora_rank}", "device": "cpu"},
                  {"train": 2.0, "eval": 1.0})


def test_logging_table_parses_resolves_paths_and_stays_out_of_the_search_hash(tmp_path):
    base = FUNCTION_STUDY.split("[logging]")[0]
    (tmp_path / "a.toml").write_text(base)
    (tmp_path / "b.toml").write_text(FUNCTION_STUDY + 'wandb = true\nexperiment = "lora-hpo"\n')
    a, b = load_config(tmp_path / "a.toml"), load_config(tmp_path / "b.toml")
    assert not a.logging.enabled and "logging" not in a.to_dict()
    assert b.logging.mlflow == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert b.logging.tensorboard == str(tmp_path.resolve() / "tb")
    assert b.logging.wandb == "offline" and b.logging.experiment == "lora-hpo"
    assert a.search_hash() == b.search_hash()  # a changed [logging] never needs --overwrite
    assert Config.from_dict(b.to_dict()).logging == b.logging  # the stored config reads back
    for line, word in (('mlflow = 3', "true or false or a string"), ('wandb = "cloud"', "offline"),
                       ('comet = true', "unknown key 'comet'")):
        (tmp_path / "c.toml").write_text(base + f"[logging]\n{line}\n")
        with pytest.raises(ConfigError, match=word):
            load_config(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text(base + '[logging]\nmlflow = "runs/track.db"\n')
    assert load_config(tmp_path / "d.toml").logging.mlflow == f"sqlite:///{tmp_path.resolve() / 'runs/track.db'}"
    assert open_trackers(a) is None


@pytest.mark.slow  # MLflow's store (6-14 s)
def test_mlflow_run_per_trial_of_a_function_study_read_back_with_search_runs(tmp_path):
    import mlflow

    (tmp_path / "s.toml").write_text(FUNCTION_STUDY)
    cfg = load_config(tmp_path / "s.toml")
    run(cfg, quiet=True)  # the runner logs each trial as it ends
    study = Study.load(cfg.study.storage, "fn")
    records = study.records()
    mlflow.set_tracking_uri(cfg.logging.mlflow)
    df = mlflow.search_runs(experiment_names=["fn"])
    assert len(df) == 3
    by_trial = {int(r["tags.llmhpo.trial"]): r for _, r in df.iterrows()}
    assert sorted(by_trial) == [0, 1, 2]
    for r in records:
        row = by_trial[r.number]
        assert row["metrics.objective"] == pytest.approx(r.value)
        assert row["metrics.regret"] == pytest.approx(r.attrs["metrics"]["regret"])
        assert float(row["params.x0"]) == pytest.approx(r.params["x0"])
        assert row["status"] == "FINISHED" and row["tags.llmhpo.state"] == "COMPLETE"
        assert row["tags.mlflow.runName"] == f"trial-{r.number}"
        assert row["tags.llmhpo.optimizer.name"] == "random"
    # another driver (a resumed study) finds them logged already, in MLflow and TensorBoard
    with open_trackers(cfg, study) as tracker:
        assert tracker.logged == {(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")}
        tracker.log_trials(records)
        tracker.log_trials(records)
    assert len(mlflow.search_runs(experiment_names=["fn"])) == 3
    run(load_config(tmp_path / "s.toml", {"budget": {"trials": 5}}), quiet=True)  # resumed: 2 more trials
    df = mlflow.search_runs(experiment_names=["fn"])
    assert sorted(int(t) for t in df["tags.llmhpo.trial"]) == [0, 1, 2, 3, 4]
    # TensorBoard: a folder per trial and the study's own
    tb = tmp_path / "tb" / "fn"
    assert sorted(p.name for p in tb.iterdir() if p.is_dir()) == ["study"] + [f"trial-000{i}" for i in range(5)]
    assert len((tb / "llmhpo-logged.jsonl").read_text().splitlines()) == 5


@pytest.mark.slow  # MLflow's store (6-14 s)
def test_curves_failures_and_adapter_reach_mlflow_and_tensorboard(tmp_path):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    space = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
             "lora_rank": {"type": "int", "low": 2, "high": 16}}
    llmhpo.optimize(trained, space, trials=8, optimizer="random", direction="maximize", storage=f"sqlite:///{tmp_path}/t.db",
                    study_name="t", quiet=True, max_repeated_failures=0, seed=3)
    study = Study.load(f"sqlite:///{tmp_path}/t.db", "t")
    cfg = Config.from_dict({**study.config.to_dict(), "logging": {"mlflow": f"sqlite:///{tmp_path}/track.db",
                                                                  "tensorboard": str(tmp_path / "tb")}})
    records = study.records()
    failed = [r for r in records if r.state == "FAIL"]
    done = [r for r in records if r.state == "COMPLETE"]
    assert failed and done
    with open_trackers(cfg, study) as tracker:
        tracker.log_trials(records)
    client = mlflow.MlflowClient(cfg.logging.mlflow)
    runs = {int(r.data.tags["llmhpo.trial"]): r for r in
            client.search_runs([client.get_experiment_by_name("t").experiment_id])}
    assert len(runs) == len(records)
    for r in done:
        mr = runs[r.number]
        assert mr.info.status == "FINISHED"
        hist = client.get_metric_history(mr.info.run_id, "train_loss")
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == list(range(1, 13))
        assert mr.data.metrics["mmlu/acc"] == 0.4 and mr.data.metrics["time_s/train"] == 2.0
        assert mr.data.params["adapter_dir"] == mr.data.tags["llmhpo.adapter_dir"] == r.attrs["metrics"]["adapter_dir"]
        assert mr.data.tags["llmhpo.device"] == "cpu"
    for r in failed:
        mr = runs[r.number]
        assert mr.info.status == "FAILED" and mr.data.tags["llmhpo.error"] == "diverged at step 5 (loss nan)"
        assert "objective" not in mr.data.metrics
        assert len(client.get_metric_history(mr.info.run_id, "train_loss")) == 5
    acc = EventAccumulator(str(tmp_path / "tb" / "t" / f"trial-{done[0].number:04d}"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train_loss")] == list(range(1, 13))
    acc = EventAccumulator(str(tmp_path / "tb" / "t" / "study"))
    acc.Reload()
    assert sorted(e.step for e in acc.Scalars("objective")) == [r.number for r in done]


def test_wandb_offline_run_per_trial(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def __init__(self, **kw):
            self.kw, self.logged, self.summary = kw, [], {}
            calls.append(self)

        def log(self, d):
            self.logged.append(d)

        def finish(self, exit_code=0):
            self.exit_code = exit_code

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: FakeRun(**kw)))
    (tmp_path / "s.toml").write_text(FUNCTION_STUDY.replace("mlflow = true\ntensorboard = \"tb\"", "wandb = true"))
    cfg = load_config(tmp_path / "s.toml")
    run(cfg, quiet=True)
    study = Study.load(cfg.study.storage, "fn")
    with open_trackers(cfg, study) as tracker:  # as a resumed driver: nothing is logged twice
        tracker.log_trials(study.records())
    assert [c.kw["name"] for c in calls] == ["trial-0", "trial-1", "trial-2"]
    assert all(c.kw["mode"] == "offline" and c.kw["project"] == "fn" and c.exit_code == 0 for c in calls)
    assert all("objective" in c.summary and c.kw["config"]["x0"] is not None for c in calls)


def test_missing_package_is_a_config_error_and_a_failing_tool_does_not_stop_the_study(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    (tmp_path / "s.toml").write_text(FUNCTION_STUDY.replace("mlflow = true\ntensorboard = \"tb\"", "wandb = true"))
    with pytest.raises(ConfigError, match="pip install"):
        open_trackers(load_config(tmp_path / "s.toml"))

    class Broken:
        name = "broken"

        def log(self, trial):
            raise ConnectionError("server down")

        def close(self):
            pass

    rec = types.SimpleNamespace(number=0, state="COMPLETE", value=1.0, params={"x": 1}, attrs={}, intermediate={})
    tracker = Tracker("s", [Broken()])
    tracker.log_trial(rec)
    assert tracker.backends == [] and "server down" in capsys.readouterr().err
    running = types.SimpleNamespace(number=1, state="RUNNING", value=None, params={}, attrs={}, intermediate={})
    tracker.log_trial(running)  # not finished: nothing to log


def test_split_metrics_and_trial_log():
    scalars, curves, texts = split_metrics({"a/acc": 0.5, "n": 3, "flag": True, "curve_curve": [1.0, 2.0],
                                            "pairs": [[10, 0.3], [20, 0.2]], "names": ["x", "y"], "device": "cpu",
                                            "traceback": "...", "bad": float("nan")})
    assert scalars == {"a/acc": 0.5, "n": 3.0}
    assert curves == {"curve": [(1.0, 1.0), (2.0, 2.0)], "pairs": [(10.0, 0.3), (20.0, 0.2)]}
    assert texts == {"device": "cpu"}
    rec = types.SimpleNamespace(number=4, state="PRUNED", value=None, params={"x": 1}, intermediate={1: 0.9, 3: 0.5},
                                attrs={"metrics": {"adapter_dir": "/a"}, "timings": {"trial": 2.0}})
    t = TrialLog.of("s", rec)
    assert t.value == 0.5 and t.curves["objective_by_resource"] == [(1.0, 0.9), (3.0, 0.5)] and t.adapter == "/a"
