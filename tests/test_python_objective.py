"""The user's own Python objective: from a script with the API (2 spawned workers, stored,
resumed, read by the CLI) and from a TOML file (`[objective] type = "python"`)."""

import os
import subprocess
import sys

import optuna
import pytest

import llmhpo
from llmhpo import ConfigError, Float, TrialFailed
from llmhpo.config import load_config
from llmhpo.objectives.python import load_target

SCRIPT = '''
import os
import llmhpo
from llmhpo import Float, Int


def objective(learning_rate, lora_rank):
    import math
    import time
    time.sleep(0.3)
    return {"loss": (math.log10(learning_rate) + 2.5) ** 2 + ((lora_rank - 16) / 16) ** 2,
            "pid": os.getpid()}


if __name__ == "__main__":
    s = llmhpo.optimize(objective, [Float("learning_rate", 1e-5, 1e-1, log=True), Int("lora_rank", 2, 32)],
                        trials=TRIALS, optimizer="soo", workers=2, metric="loss",
                        storage="sqlite:///mine.db", study_name="mine", progress=False)
    print("RESULT", s.complete, s.best_value)
'''


def python(args, cwd, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env, **kw)


@pytest.mark.slow  # scripts and the CLI in subprocesses, two workers (8-12 s)
def test_api_two_workers_from_a_script_stored_resumed_and_read_by_the_cli(tmp_path):
    (tmp_path / "mine.py").write_text(SCRIPT.replace("TRIALS", "8"))
    r = python(["mine.py"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "RESULT 8" in r.stdout
    st = optuna.load_study(study_name="mine", storage=f"sqlite:///{tmp_path / 'mine.db'}")
    assert [t.state.name for t in st.trials] == ["COMPLETE"] * 8
    assert len({t.user_attrs["metrics"]["pid"] for t in st.trials}) == 2  # two worker processes
    assert set(st.trials[0].params) == {"learning_rate", "lora_rank"}
    # the same script with a larger budget resumes the study
    (tmp_path / "mine.py").write_text(SCRIPT.replace("TRIALS", "11"))
    r = python(["mine.py"], tmp_path)
    assert r.returncode == 0, r.stderr
    st = optuna.load_study(study_name="mine", storage=f"sqlite:///{tmp_path / 'mine.db'}")
    assert len(st.trials) == 11 and len({tuple(t.user_attrs["x"]) for t in st.trials}) == 11
    for cmd in (["status", "mine.db"], ["best", "mine.db", "--json"]):
        r = python(["-m", "llmhpo.cli", *cmd], tmp_path)
        assert r.returncode == 0, r.stderr
    assert "11 complete" in python(["-m", "llmhpo.cli", "status", "mine.db"], tmp_path).stdout


def test_api_script_without_main_guard_is_refused_before_anything_runs(tmp_path):
    body = SCRIPT.replace("TRIALS", "4").replace('if __name__ == "__main__":', "if True:")
    (tmp_path / "noguard.py").write_text(body)
    r = python(["noguard.py"], tmp_path)
    assert r.returncode != 0
    assert 'put the call under `if __name__ == "__main__":`' in r.stderr
    assert not (tmp_path / "mine.db").exists()


TOML_SCRIPT = """
from llmhpo.config import load_config
from llmhpo.runner import run


def objective(x):
    print("TRIAL RAN")
    return (x - 0.3) ** 2


run(load_config("s.toml"))
"""


def test_toml_study_run_from_a_script_without_main_guard_is_refused_before_any_worker(tmp_path):
    (tmp_path / "study.py").write_text(TOML_SCRIPT)
    (tmp_path / "s.toml").write_text('[budget]\ntrials = 4\n[runner]\nworkers = 2\n[optimizer]\nname = "random"\n'
                                     '[objective]\ntype = "python"\ntarget = "study.py:objective"\n'
                                     '[space]\nx = {type = "float", low = 0, high = 1}\n')
    r = python(["study.py"], tmp_path)
    assert r.returncode != 0
    assert 'study.py starts the study at its top level: each worker process re-runs the script' in r.stderr
    assert 'put the call under `if __name__ == "__main__":`' in r.stderr
    assert "TRIAL RAN" not in r.stdout + r.stderr and "started" not in r.stdout
    assert not (tmp_path / "s.db").exists()


def quadratic(x, y):
    return (x - 0.3) ** 2 + (y + 0.2) ** 2


def test_api_inline_in_memory_any_optimizer():
    s = llmhpo.optimize(quadratic, {"x": {"type": "float", "low": -1, "high": 1},
                                    "y": {"type": "float", "low": -1, "high": 1}},
                        trials=30, optimizer="optuna_tpe", quiet=True)
    assert s.complete == 30 and s.best_value < 0.05
    assert set(s.best_params) == {"x", "y"}


def test_api_errors_before_compute():
    with pytest.raises(ConfigError, match="takes no argument 'z'"):
        llmhpo.optimize(quadratic, [Float("x", 0, 1), Float("y", 0, 1), Float("z", 0, 1)], trials=2, quiet=True)
    with pytest.raises(ConfigError, match="needs argument 'y'"):
        llmhpo.optimize(quadratic, [Float("x", 0, 1)], trials=2, quiet=True)
    with pytest.raises(ConfigError, match="top level of a module"):
        llmhpo.optimize(lambda x: x, [Float("x", 0, 1)], trials=2, workers=2, quiet=True)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        llmhpo.optimize(quadratic, [Float("x", 0, 1), Float("y", 0, 1)], trials=2, optimizer="nope", quiet=True)



def test_a_stored_study_with_another_configuration_names_the_python_fix(tmp_path):
    from llmhpo.errors import StudyError

    space, url = [Float("x", -1, 1), Float("y", -1, 1)], f"sqlite:///{tmp_path}/q.db"
    llmhpo.optimize(quadratic, space, trials=3, optimizer="random", storage=url, study_name="q", quiet=True)
    with pytest.raises(StudyError, match=r"changed: optimizer.name.*from Python: overwrite=True, or another study_name="):
        llmhpo.optimize(quadratic, space, trials=3, optimizer="soo", storage=url, study_name="q", quiet=True)
    s = llmhpo.optimize(quadratic, space, trials=3, optimizer="soo", storage=url, study_name="q", overwrite=True,
                        quiet=True)
    assert s.complete == 3 and len(optuna.load_study(study_name="q", storage=url).trials) == 3  # replaced, not added to

def fails(x):
    raise TrialFailed("[eval] objective 'my_mc/accuracy' was not produced; the tasks gave: my_mc/acc, my_mc/acc_norm "
                      "and a long tail that a cut at sixty characters would hide: END")


def test_repeated_failures_stop_the_study_with_the_reason():
    s = llmhpo.optimize(fails, [Float("x", 0, 1)], trials=20, optimizer="random", quiet=True)
    assert s.stopped == "repeated failures" and s.failed == 3 and s.complete == 0
    assert s.failure.startswith("[eval] objective 'my_mc/accuracy'")


def exits(x):
    sys.exit(3)


def test_sys_exit_in_the_objective_fails_its_trial_only():
    s = llmhpo.optimize(exits, [Float("x", 0, 1)], trials=5, optimizer="random", quiet=True)
    assert s.failed == 3 and s.failure == "the objective called sys.exit(3)"


OBJ_FILE = '''
def train(lr, depth=3):
    if lr > 0.5:
        from llmhpo import TrialFailed
        raise TrialFailed("[train] diverged: lr too large")
    return {"score": lr * depth, "depth_seen": depth}
'''

TOML = '''
[study]
name = "py"
direction = "maximize"
[budget]
trials = 6
[runner]
workers = 2
max_repeated_failures = 0
[optimizer]
name = "random"
[objective]
type = "python"
target = "obj/train.py:train"
metric = "score"
[space.lr]
type = "float"
low = 0.0
high = 1.0
'''


@pytest.mark.slow  # scripts and the CLI in subprocesses, two workers (8-12 s)
def test_cli_python_target_relative_to_the_toml_two_workers_and_whole_reasons(tmp_path):
    (tmp_path / "conf" / "obj").mkdir(parents=True)
    (tmp_path / "conf" / "obj" / "train.py").write_text(OBJ_FILE)
    (tmp_path / "conf" / "py.toml").write_text(TOML)
    r = python(["-m", "llmhpo.cli", "check", "conf/py.toml"], tmp_path)  # run from elsewhere
    assert r.returncode == 0, r.stderr
    r = python(["-m", "llmhpo.cli", "run", "conf/py.toml"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "conf" / "py.db").exists() and not (tmp_path / "py.db").exists()
    st = optuna.load_study(study_name="py", storage=f"sqlite:///{tmp_path / 'conf' / 'py.db'}")
    assert len(st.trials) == 6
    for t in st.trials:
        if t.state.name == "COMPLETE":
            assert t.value == pytest.approx(3 * t.params["lr"]) and t.user_attrs["metrics"]["depth_seen"] == 3
        else:
            assert t.user_attrs["error"] == "[train] diverged: lr too large"
    failed = [t for t in st.trials if t.state.name == "FAIL"]
    r = python(["-m", "llmhpo.cli", "status", "conf/py.toml"], tmp_path)
    assert r.returncode == 0
    if failed:  # the whole reason, its [train] prefix included
        assert "[train] diverged: lr too large" in " ".join(r.stdout.split())


def test_python_target_errors_name_the_fix(tmp_path):
    (tmp_path / "obj").mkdir()
    (tmp_path / "obj" / "train.py").write_text(OBJ_FILE)
    cases = {
        'target = "obj/train.py:train"': ("[space.depth]\ntype = \"int\"\nlow = 1\nhigh = 3\n[space.width]\n"
                                          "type = \"int\"\nlow = 1\nhigh = 3\n", "takes no argument 'width'"),
        'target = "obj/nope.py:train"': ("", "no such file"),
        'target = "obj/train.py:trian"': ("", "has no attribute 'trian'"),
        'target = "not_a_module_xyz:f"': ("", "cannot import 'not_a_module_xyz'"),
    }
    for target, (extra, message) in cases.items():
        (tmp_path / "py.toml").write_text(TOML.replace('target = "obj/train.py:train"', target) + extra)
        r = python(["-m", "llmhpo.cli", "check", "py.toml"], tmp_path)
        assert r.returncode == 2 and message in r.stderr, (target, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "obj" / "helpers.py").write_text("def triple(x):\n    return 3 * x\n")  # a neighbour it imports
    (tmp_path / "obj" / "uses.py").write_text("from helpers import triple\n\n\ndef train(lr):\n"
                                              "    return {'score': triple(lr)}\n")
    (tmp_path / "py.toml").write_text(TOML.replace("obj/train.py", "obj/uses.py"))
    assert load_target(load_config(tmp_path / "py.toml").objective)(lr=0.5) == {"score": 1.5}
    r = python(["-m", "llmhpo", "check", "py.toml"], tmp_path)  # python -m llmhpo is the command too
    assert r.returncode == 0, r.stderr
    (tmp_path / "py.toml").write_text(TOML.replace('target = "obj/train.py:train"', 'target = "train"'))
    with pytest.raises(ConfigError, match="must name a function"):
        load_config(tmp_path / "py.toml")
    (tmp_path / "py.toml").write_text(TOML.replace("[space.lr]\ntype", "[spaces]\ntype"))
    with pytest.raises(ConfigError):
        load_config(tmp_path / "py.toml")


def curve(lr, fidelity):
    """A user's multi-fidelity function: continues from its own checkpoint file."""
    import json
    from pathlib import Path

    state = Path(fidelity.checkpoint) / "steps.json"
    before = json.loads(state.read_text()) if state.exists() else 0
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(fidelity.value))
    return {"loss": (lr - 0.3) ** 2 + 1.0 / fidelity.value, "resource_trained": fidelity.value - before}


def test_api_multi_fidelity_with_the_users_own_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = llmhpo.optimize(curve, [Float("lr", 0, 1)], resource=200, metric="loss", optimizer="random",
                        fidelity={"min": 1, "max": 27, "scheduler": "hyperband"}, storage="sqlite:///c.db", quiet=True)
    assert s.stopped == "budget" and s.complete >= 1 and s.resource_spent <= 200
    st = optuna.load_study(study_name="curve", storage="sqlite:///c.db")
    assert {t.state.name for t in st.trials} <= {"COMPLETE", "PRUNED"}
    assert sum(max(t.intermediate_values) for t in st.trials) == s.resource_spent  # nothing trained twice
    with pytest.raises(ConfigError, match="takes no argument 'fidelity'"):
        llmhpo.optimize(quadratic, [Float("x", 0, 1), Float("y", 0, 1)], resource=50, quiet=True,
                        fidelity={"min": 1, "max": 9})


def test_optimize_without_a_budget_says_how_to_give_one():
    with pytest.raises(ConfigError, match=r"optimize needs a budget: trials=N"):
        llmhpo.optimize(lambda x: x, [llmhpo.Float("x", 0.0, 1.0)])
