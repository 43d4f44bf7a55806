"""[study] reevaluate: a noisy study's best is the best mean over re-evaluations of its top
configurations, not its luckiest draw; re-evaluations are outside the budget and resume."""

import subprocess
import sys

import optuna

from llmhpo.config import load_config
from llmhpo.runner import run

TOML = """
[study]
name = "noisy"
storage = "sqlite:///noisy.db"
seed = 2
reevaluate = {k}
[budget]
trials = {trials}
[optimizer]
name = "random"
[objective]
type = "function"
name = "branin"
noise = 30.0
"""


def test_best_is_the_best_mean_of_the_reevaluated_configurations(tmp_path):
    p = tmp_path / "noisy.toml"
    p.write_text(TOML.format(k=3, trials=12))
    s = run(load_config(p), progress=False)
    ts = optuna.load_study(study_name="noisy", storage=f"sqlite:///{tmp_path / 'noisy.db'}").trials
    first = [t for t in ts if "reevaluation_of" not in t.user_attrs]
    again = [t for t in ts if "reevaluation_of" in t.user_attrs]
    assert len(first) == 12 and s.complete == 12  # the budget counts first evaluations only
    assert len(again) == 3 and all(t.state.name == "COMPLETE" for t in again)
    top3 = sorted((t for t in first), key=lambda t: t.value)[:3]
    assert sorted(t.user_attrs["reevaluation_of"] for t in again) == sorted(t.number for t in top3)
    for t in again:  # the same configuration, another draw of the noise
        orig = ts[t.user_attrs["reevaluation_of"]]
        assert t.params == orig.params and t.value != orig.value
    means = {t.number: (t.value + next(a.value for a in again if a.user_attrs["reevaluation_of"] == t.number)) / 2
             for t in top3}
    best_number = min(means, key=means.get)
    assert s.best_number == best_number and abs(s.best_value - means[best_number]) < 1e-9
    # resumed with the same budget: nothing runs again
    s2 = run(load_config(p), progress=False)
    ts2 = optuna.load_study(study_name="noisy", storage=f"sqlite:///{tmp_path / 'noisy.db'}").trials
    assert len(ts2) == 15 and s2.best_number == best_number
    st = subprocess.run([sys.executable, "-m", "llmhpo.cli", "status", "noisy.toml"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=60)
    assert "3 re-evaluation(s)" in st.stdout and "best mean" in st.stdout and "over 2 evaluations" in st.stdout


def test_finetune_reevaluations_get_another_training_seed():
    from llmhpo.objectives import get_kind

    assert get_kind("finetune").reseed(None, {"learning_rate": 1e-3}, 7) == {"learning_rate": 1e-3, "seed": 7}
    assert get_kind("function").reseed(None, {"x0": 1.0}, 7) == {"x0": 1.0}
