"""Bad config files end with exit code 2, one line naming the key, no traceback, no study."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhpo.config import load_config
from llmhpo.errors import ConfigError

GOOD = """
[study]
name = "s"
seed = 1
[budget]
trials = 5
[optimizer]
name = "random"
[objective]
type = "function"
name = "branin"
"""

BAD = {
    "wrong type": (GOOD.replace("trials = 5", 'trials = "five"'), "[budget] trials = 'five' must be an integer"),
    "unknown optimizer": (GOOD.replace('name = "random"', 'name = "hyperband"'), "unknown optimizer 'hyperband'"),
    "unknown option": (GOOD.replace('name = "random"', 'name = "soo"\nk = 3'), "optimizer 'soo' has no option 'k'"),
    "bad bounds": (GOOD + '[space.x0]\ntype = "float"\nlow = 10\nhigh = -5\n', "variable 'x0': low=10.0 must be below high=-5.0"),
    "missing section": (GOOD.replace("[budget]\ntrials = 5\n", ""), "the section [budget] is missing"),
    "unknown key": (GOOD.replace("seed = 1", "seed = 1\nseeed = 2"), "[study] has an unknown key 'seeed'"),
    "unknown section": (GOOD + "[optimiser]\nname = 'bo'\n", "top level] has an unknown key 'optimiser'"),
    "bad direction": (GOOD.replace("seed = 1", 'direction = "max"'), "[study] direction = 'max' must be"),
    "bad toml": (GOOD + "[[[", "is not valid TOML"),
    "bad warm start": (GOOD + "[[warm_start]]\nx0 = 100.0\n", "[[warm_start]] number 1: parameter 'x0'=100.0"),
    "bad function": (GOOD.replace('name = "branin"', 'name = "braninn"'), "unknown function 'braninn'"),
    "workers": (GOOD + "[runner]\nworkers = 0\n", "[runner] workers = 0 must be at least 1"),
}


def llmhpo(*args, cwd):
    return subprocess.run([sys.executable, "-m", "llmhpo.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_good_config_loads(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(GOOD)
    cfg = load_config(p)
    assert cfg.space.names == ["x0", "x1"] and cfg.budget.trials == 5
    assert cfg.study.storage == f"sqlite:///{tmp_path / 's.db'}"  # next to the TOML, wherever we run from


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_library_error(tmp_path, case):
    text, message = BAD[case]
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert message in str(e.value)


@pytest.mark.parametrize("case", ["wrong type", "unknown optimizer", "bad bounds", "missing section", "unknown key"])
def test_bad_config_cli_exit_2_one_line_no_study(tmp_path, case):
    text, message = BAD[case]
    (tmp_path / "s.toml").write_text(text)
    r = llmhpo("run", "s.toml", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert message.split("'")[0].strip() in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not list(tmp_path.glob("*.db")), "a study was created for a bad config"


def test_help_on_every_command(tmp_path):
    for cmd in ["run", "status", "best", "bench", "check", "demo", "report"]:
        r = llmhpo(cmd, "--help", cwd=tmp_path)
        assert r.returncode == 0 and "Usage" in r.stdout, cmd


def test_run_status_best_report_round_trip(tmp_path):
    (tmp_path / "s.toml").write_text(GOOD)
    r = llmhpo("run", "s.toml", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "5 complete" in r.stdout
    r = llmhpo("status", "s.toml", cwd=tmp_path)
    assert r.returncode == 0 and "5 complete" in r.stdout
    r = llmhpo("best", "s.db", "--json", cwd=tmp_path)
    assert r.returncode == 0 and '"params"' in r.stdout
    r = llmhpo("report", "s.toml", "--out", "rep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep" / "history.png").stat().st_size > 1000
    assert "| trial |" in (tmp_path / "rep" / "report.md").read_text()


def test_changed_config_refuses_to_resume_unless_overwrite(tmp_path):
    (tmp_path / "s.toml").write_text(GOOD)
    assert llmhpo("run", "s.toml", "--no-progress", cwd=tmp_path).returncode == 0
    (tmp_path / "s.toml").write_text(GOOD.replace('name = "random"', 'name = "sobol"'))
    r = llmhpo("run", "s.toml", "--no-progress", cwd=tmp_path)
    assert r.returncode == 2
    assert "exists with a different configuration (changed: optimizer.name)" in r.stderr
    assert "--overwrite" in r.stderr
    r = llmhpo("run", "s.toml", "--no-progress", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0 and "5 complete" in r.stdout


def test_bench_cli_prints_table_and_json(tmp_path):
    r = llmhpo("bench", "--optimizers", "random,direct", "--functions", "branin", "--budget", "20", "--seeds", "3",
               "--workers", "2", "--json", "b.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "median regret" in r.stdout and "direct" in r.stdout
    import json

    data = json.loads((tmp_path / "b.json").read_text())
    assert len(data["runs"]) == 6 and {s["optimizer"] for s in data["summary"]} == {"random", "direct"}
    assert all(run["evaluations"] == 20 for run in data["runs"])


def test_example_configs_are_valid():
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "examples").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.budget.trials >= 1, path
    from importlib import resources

    packaged = resources.files("llmhpo").joinpath("demo.toml").read_text()
    assert packaged == (root / "examples" / "demo.toml").read_text(), "examples/demo.toml is the demo's config"


def test_report_study_example_is_table_3_1_with_hellaswag_objective():
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "examples" / "llama32-alpaca-hellaswag.toml")
    assert cfg.space.names == ["learning_rate", "lora_rank", "lora_alpha", "lora_dropout", "weight_decay"]
    assert cfg.objective.eval.objective == "hellaswag/acc_norm" and "mmlu" in cfg.objective.eval.tasks
    assert cfg.budget.trials == 50 and cfg.objective.model.name == "meta-llama/Llama-3.2-1B"
