"""Bad config files end with exit code 2, one line naming the key, no traceback, no study."""

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
    "auto workers without ray": (GOOD + '[runner]\nworkers = "auto"\n', "(\"auto\" is for executor = \"ray\")"),
    "executor": (GOOD + '[runner]\nexecutor = "slurm"\n', "[runner] executor = 'slurm' must be"),
    "devices with ray": (GOOD + '[runner]\nexecutor = "ray"\ndevices = ["0"]\n', "set gpus_per_trial"),
    "address without ray": (GOOD + '[runner]\naddress = "auto"\n', "it needs executor = \"ray\""),
    "gpus without ray": (GOOD + "[runner]\ngpus_per_trial = 1\n", "[runner] gpus_per_trial with the process executor groups [runner] devices"),
    "retries": (GOOD + "[runner]\nmax_retries = -1\n", "[runner] max_retries = -1 must be >= 0"),
    "timeout": (GOOD + '[runner]\ntrial_timeout = "soon"\n', "[runner] trial_timeout = 'soon' must be seconds"),
    "reevaluate": (GOOD.replace("seed = 1", "seed = 1\nreevaluate = -2"), "[study] reevaluate = -2 must be >= 0"),
    "timeout inline": (GOOD + '[runner]\nexecutor = "inline"\ntrial_timeout = 60\n', "trial_timeout needs trials in worker"),
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


@pytest.mark.slow  # several CLI runs in subprocesses (6-19 s)
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


@pytest.mark.slow  # several CLI runs in subprocesses (6-19 s)
def test_changed_config_refuses_to_resume_unless_overwrite(tmp_path):
    (tmp_path / "s.toml").write_text(GOOD)
    assert llmhpo("run", "s.toml", "--no-progress", cwd=tmp_path).returncode == 0
    (tmp_path / "s.toml").write_text(GOOD.replace('name = "random"', 'name = "sobol"'))
    r = llmhpo("run", "s.toml", "--no-progress", cwd=tmp_path)
    assert r.returncode == 2
    assert "exists with a different configuration (changed: optimizer.name)" in r.stderr
    assert "--overwrite" in r.stderr
    r = llmhpo("check", "s.toml", cwd=tmp_path)  # check says what the run would refuse
    assert r.returncode == 2 and "exists with a different configuration (changed: optimizer.name)" in r.stderr
    r = llmhpo("check", "s.toml", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0 and "--overwrite replaces it" in r.stdout
    (tmp_path / "bad.toml").write_text(GOOD.replace('name = "random"', 'name = "soo"\nK = 1'))
    r = llmhpo("run", "bad.toml", "--no-progress", "--overwrite", cwd=tmp_path)  # refused before replacing
    assert r.returncode == 2 and "K must be an integer >= 2" in r.stderr
    assert "5 complete" in llmhpo("status", "s.toml", cwd=tmp_path).stdout
    r = llmhpo("run", "s.toml", "--no-progress", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0 and "5 complete" in r.stdout


@pytest.mark.slow  # several CLI runs in subprocesses (6-19 s)
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
        assert cfg.budget.trials >= 1 or cfg.resource_budget(), path
    from importlib import resources

    packaged = resources.files("llmhpo").joinpath("demo.toml").read_text()
    assert packaged == (root / "examples" / "demo.toml").read_text(), "examples/demo.toml is the demo's config"


def test_report_study_example_is_table_3_1_with_hellaswag_objective():
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "examples" / "llama32-alpaca-hellaswag.toml")
    assert cfg.space.names == ["learning_rate", "lora_rank", "lora_alpha", "lora_dropout", "weight_decay"]
    assert cfg.objective.eval.objective == "hellaswag/acc_norm" and "mmlu" in cfg.objective.eval.tasks
    assert cfg.budget.trials == 50 and cfg.objective.model.name == "meta-llama/Llama-3.2-1B"


FAILING = """
[study]
name = "f"
[budget]
trials = 20
[optimizer]
name = "random"
[objective]
type = "python"
target = "bad.py:f"
[space.x]
type = "float"
low = 0.0
high = 1.0
"""


def test_run_where_every_trial_fails_stops_early_with_the_reason_and_exit_1(tmp_path):
    (tmp_path / "bad.py").write_text("def f(x):\n    raise FileNotFoundError('data/train.jsonl is missing')\n")
    (tmp_path / "f.toml").write_text(FAILING)
    r = llmhpo("run", "f.toml", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "0 complete, 3 failed" in r.stdout
    reason = "FileNotFoundError: data/train.jsonl is missing (bad.py:2 in f)"
    assert r.stdout.count("failed after") == 3 and r.stdout.count(reason) == 4  # 3 trials + the stop
    assert r.stderr.strip() == f"error: {reason}"
    # configurable: 0 never stops, and a study with no complete trial still exits 1
    (tmp_path / "f.toml").write_text(FAILING.replace("trials = 20", "trials = 5\n[runner]\nmax_repeated_failures = 0")
                                     .replace('name = "f"', 'name = "g"'))
    r = llmhpo("run", "f.toml", cwd=tmp_path)
    assert r.returncode == 1 and "0 complete, 5 failed" in r.stdout and "no trial completed" in r.stderr


def test_failures_that_depend_on_the_params_do_not_stop_the_study(tmp_path):
    (tmp_path / "s.toml").write_text(GOOD.replace('type = "function"', 'type = "sleep"\nseconds = 0.0\nfail_above = 20.0')
                                     .replace('name = "branin"', 'function = "branin"').replace("trials = 5", "trials = 12"))
    r = llmhpo("run", "s.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stopped by budget" in r.stdout


def test_without_a_terminal_run_prints_one_line_per_trial_start_and_end(tmp_path):
    (tmp_path / "s.toml").write_text(GOOD.replace("trials = 5", "trials = 3"))
    r = llmhpo("run", "s.toml", cwd=tmp_path)  # stdout is a pipe, as under nohup or Slurm
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    started = [ln for ln in lines if " started: x0=" in ln]
    done = [ln for ln in lines if " done in " in ln and "value" in ln]
    assert len(started) == 3 and len(done) == 3, r.stdout
    assert len(lines) == 3 + 3 + 2  # and the two summary lines, nothing else
    assert r.stderr == ""


def test_status_and_best_on_a_missing_study_say_so_and_create_nothing(tmp_path):
    (tmp_path / "s.toml").write_text(GOOD)
    (tmp_path / "elsewhere").mkdir()
    for args in (["status", "../s.toml"], ["best", "../s.toml"], ["status", "sqlite:///nothing.db"]):
        r = llmhpo(*args, cwd=tmp_path / "elsewhere")
        assert r.returncode == 2 and "no study in" in r.stderr and "llmhpo run" in r.stderr, r.stderr
    assert not list(tmp_path.rglob("*.db"))
    (tmp_path / "s.db").write_bytes(b"")  # an empty file is no study either
    r = llmhpo("status", "s.toml", cwd=tmp_path)
    assert r.returncode == 2 and "does not exist or is empty" in r.stderr


def test_relative_paths_are_relative_to_the_toml_folder(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "s.toml").write_text(GOOD.replace('seed = 1', 'seed = 1\nstorage = "dbs/s.db"'))
    (tmp_path / "conf" / "dbs").mkdir()
    assert llmhpo("run", "conf/s.toml", cwd=tmp_path).returncode == 0
    assert (tmp_path / "conf" / "dbs" / "s.db").exists() and not (tmp_path / "dbs").exists()
    r = llmhpo("status", "s.toml", cwd=tmp_path / "conf")
    assert r.returncode == 0 and "5 complete" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "[budget] trials = 0 must be at least 1"),
    (["--workers", "0"], "[runner] workers = 0 must be at least 1"),
    (["--workers", "2"], "[runner] executor = \"inline\" runs one trial at a time"),
])
def test_command_line_overrides_are_validated_like_the_file(tmp_path, args, message):
    (tmp_path / "s.toml").write_text(GOOD + '[runner]\nexecutor = "inline"\n')
    r = llmhpo("run", "s.toml", *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not list(tmp_path.glob("*.db"))


def test_help_keeps_toml_table_names():
    r = llmhpo("run", "--help", cwd=Path.cwd())
    assert "Override [budget] trials." in " ".join(r.stdout.split())
    assert "Override [runner] workers." in " ".join(r.stdout.split())


def test_check_rejects_unknown_optuna_sampler_options(tmp_path):
    (tmp_path / "s.toml").write_text(GOOD.replace('name = "random"', 'name = "optuna_tpe"\nn_startup = 5'))
    r = llmhpo("check", "s.toml", cwd=tmp_path)
    assert r.returncode == 2 and "optimizer 'optuna_tpe' has no option 'n_startup'" in r.stderr
    assert "n_startup_trials" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # several CLI runs in subprocesses (6-19 s)
def test_bench_multi_fidelity_compares_schedulers_and_optuna_pruners(tmp_path):
    r = llmhpo("bench", "--scheduler", "none,asha,hyperband", "--optimizers", "random", "--functions", "branin",
               "--budget", "10", "--seeds", "2", "--fidelity", "1:9:3", "--json", "mf.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    data = json.loads((tmp_path / "mf.json").read_text())
    methods = {s["method"] for s in data["summary"]}
    assert methods == {"random", "asha:random", "hyperband:random", "optuna:hyperband", "optuna:sh"}
    for run in data["runs"]:
        spent = [s for s, _ in run["trace"]]
        assert spent == sorted(spent) and (not spent or spent[-1] <= 90)
    r = llmhpo("bench", "--scheduler", "asha,bohb", cwd=tmp_path)
    assert r.returncode == 2 and "--scheduler 'bohb' is unknown" in r.stderr


def test_ray_runner_round_trips_through_the_stored_config(tmp_path):
    from llmhpo.config import Config

    p = tmp_path / "s.toml"
    p.write_text(GOOD + '[runner]\nexecutor = "ray"\naddress = "auto"\ngpus_per_trial = 1\ntrial_timeout = "2h"\n')
    cfg = load_config(p)
    r = cfg.runner
    assert (r.workers, r.address, r.gpus_per_trial, r.cpus_per_trial, r.trial_timeout, r.max_retries) == \
        (0, "auto", 1.0, 1.0, 7200.0, 1)
    assert Config.from_dict(cfg.to_dict(), base_dir=tmp_path).runner == r
    plain = load_config(tmp_path / "s.toml").__class__.from_dict(
        {**cfg.to_dict(), "runner": {"workers": 2}}, base_dir=tmp_path).runner
    assert Config.from_dict({**cfg.to_dict(), "runner": plain.to_dict()}, base_dir=tmp_path).runner == plain
