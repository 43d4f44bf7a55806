"""The recorded LoRA benchmark: the table, its surrogate and the bench problem built on it."""

import csv

import numpy as np
import pytest

from llmhpo.errors import ConfigError
from llmhpo.objectives import recorded
from llmhpo.objectives.functions import FUNCTION_NAMES, get_function


def _table(path, rng):
    """A made-up table in the recorded format: accuracy rises with the learning rate's unit
    coordinate and with the rung; configurations 0 and 1 repeated with three seeds."""
    cols = ["config", "seed", "rung", *recorded.VARIABLES, "add_acc", "general_acc", "val_loss", "train_loss",
            "train_seconds", "eval_seconds"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        for c in range(40):
            lr = 10 ** rng.uniform(-10, -1)
            u = (np.log10(lr) + 10) / 9
            for s in ((0, 1, 2) if c < 2 else (0,)):
                for r in recorded.RUNGS:
                    acc = 0.3 + 0.6 * u * r / 16 + 0.02 * s
                    w.writerow({"config": c, "seed": s, "rung": r, "learning_rate": lr, "lora_rank": 8,
                                "lora_alpha": 16, "lora_dropout": 0.1, "weight_decay": 0.01, "add_acc": acc,
                                "general_acc": 0.5})
        # a diverged run: its rungs have no score and are left out
        w.writerow({"config": 99, "seed": 0, "rung": 16, "learning_rate": 0.1, "lora_rank": 8, "lora_alpha": 16,
                    "lora_dropout": 0.1, "weight_decay": 0.01})
    return str(path)


def test_surrogate_learns_the_table_and_states_its_held_out_error(tmp_path):
    path = _table(tmp_path / "t.csv", np.random.default_rng(0))
    t = recorded.load(path)
    assert len(t["acc"]) == 44 * 3 and 99 not in t["config"]
    low, high = np.zeros((1, 5)), np.zeros((1, 5))
    low[0, 0], high[0, 0] = 0.1, 0.9
    assert recorded.predict(high, 16, path)[0] > recorded.predict(low, 16, path)[0] + 0.2
    assert recorded.predict(high, 16, path)[0] > recorded.predict(high, 4, path)[0]
    mid = recorded.predict(high, 8 * 2 ** 0.5, path)[0]  # between rungs: between their predictions
    assert recorded.predict(high, 8, path)[0] <= mid <= recorded.predict(high, 16, path)[0]
    cv = recorded.cross_validated(path)
    assert cv["configurations"] == 40 and cv["mae"] < 0.1 and cv["spearman_top"] > 0.8, cv
    spread = recorded.seed_spread(path)  # seeds 0, 1, 2 add 0, 0.02, 0.04: a standard deviation of 0.02
    assert spread["16"] == pytest.approx(0.02)
    assert recorded.best_recorded(path) == pytest.approx(max(t["acc"][(t["rung"] == 16) & (t["seed"] == 0)]), abs=0.05)


def test_the_shipped_table_is_a_bench_problem_that_seeds_do_not_move():
    f = get_function("lora_smollm2")
    assert "lora_smollm2" not in FUNCTION_NAMES  # not part of the synthetic suite's "all"
    assert f.dim == 5 and f.shifted(3) is f
    assert f.f_min == pytest.approx(1 - recorded.best_predicted()) and f(f.x_opt) == pytest.approx(f.f_min)
    assert 0.0 <= f(np.full(5, 0.5)) <= 1.0
    # the run with the smallest learning rate of the table keeps the base model's score: a
    # larger learning rate the best one found does better than the smallest
    t = recorded.load()
    top = t["rung"] == 16
    u_small = t["unit"][top][np.argmin(t["unit"][top][:, 0])]
    assert f(f.x_opt) < f(u_small)


def test_bench_and_multi_fidelity_curves_run_on_the_recorded_problem():
    from llmhpo.lab.bench import Spec, run_one
    from llmhpo.objectives.synthetic import FunctionObjective

    run = run_one("lora_smollm2", Spec("random", "random"), 12, seed=0)
    assert len(run.values) == 12 and run.best_regret() >= 0
    obj = FunctionObjective("lora_smollm2")
    x = list(get_function("lora_smollm2").x_opt)
    assert obj.curve_value(x, 16, 16) == pytest.approx(recorded.value(np.asarray(x)))
    assert obj.curve_value(x, 4, 16) == pytest.approx(recorded.value(np.asarray(x), 4))


def test_a_space_beyond_the_recorded_box_is_refused_and_a_renamed_one_runs(tmp_path):
    """Its arguments are unit coordinates: the paper space's native ranges would be read as
    points far outside the data, so they are refused; names and narrower boxes are kept."""
    from llmhpo.config import load_config

    base = '[study]\nname = "r"\n[objective]\ntype = "function"\nname = "lora_smollm2"\n[optimizer]\nname = "random"\n' \
           '[budget]\ntrials = 3\n'
    names = ["learning_rate", "lora_rank", "lora_alpha", "lora_dropout", "weight_decay"]
    narrow = "".join(f'[space.{n}]\ntype = "float"\nlow = 0.1\nhigh = 0.9\n' for n in names)
    (tmp_path / "ok.toml").write_text(base + narrow)
    assert load_config(tmp_path / "ok.toml").space.names == names
    wide = narrow.replace("low = 0.1\nhigh = 0.9", 'low = 1e-10\nhigh = 0.1\nlog = true', 1)
    (tmp_path / "bad.toml").write_text(base + wide)
    with pytest.raises(ConfigError, match=r"\[space\] learning_rate: .*own box \[0, 1\].*remove \[space\]"):
        load_config(tmp_path / "bad.toml")


def test_rungs_below_a_quarter_of_max_are_refused_where_the_recording_has_none(tmp_path):
    """Its learning curve holds steps 4, 8, 16 scaled onto [max / 4, max]: lower rungs would all
    score as max / 4, so a study or a bench that asks for them stops before any trial."""
    from typer.testing import CliRunner

    from llmhpo.cli import app
    from llmhpo.config import load_config

    base = '[study]\nname = "r"\n[objective]\ntype = "function"\nname = "lora_smollm2"\n[optimizer]\nname = "random"\n' \
           '[budget]\nresource = 100\n[fidelity]\n'
    (tmp_path / "s.toml").write_text(base + "min = 1\nmax = 27\n")
    with pytest.raises(ConfigError, match=r"\[fidelity\] min = 1: .*below max / 4 = 6.75 scores the same"):
        load_config(tmp_path / "s.toml")
    (tmp_path / "s.toml").write_text(base + "min = 4\nmax = 16\neta = 2\n")
    assert load_config(tmp_path / "s.toml").fidelity.min == 4
    r = CliRunner().invoke(app, ["bench", "--scheduler", "asha", "--optimizers", "random", "--functions",
                                 "lora_smollm2", "--budget", "3", "--seeds", "1"])
    assert r.exit_code == 2 and "--fidelity MIN = 1: function 'lora_smollm2'" in " ".join(r.output.split())
