"""A mistyped name gets "did you mean ...?" next to the list of valid names, wherever a
name is looked up: optimisers, functions, objective types, schedulers, TOML tables and keys,
variable types, and the names given to `llmhpo bench`."""

import pytest
from typer.testing import CliRunner

from llmhpo.cli import app
from llmhpo.config import load_config
from llmhpo.errors import ConfigError, did_you_mean
from llmhpo.objectives import get_kind
from llmhpo.objectives.functions import get_function
from llmhpo.optimizers import check_optimizer, make_optimizer
from llmhpo.schedulers import make_scheduler


def test_did_you_mean_finds_near_misses_only():
    names = ["random", "soo", "bamsoo", "optuna_tpe"]
    assert did_you_mean("sooo", names) == " (did you mean 'soo'?)"
    assert did_you_mean("SOO", names) == " (did you mean 'soo'?)"
    assert did_you_mean("optuna-tpe", names) == " (did you mean 'optuna_tpe'?)"
    assert did_you_mean("xyz", names) == ""
    assert did_you_mean(3, names) == ""


def test_optimizer_names_and_options():
    with pytest.raises(ConfigError, match=r"unknown optimizer 'sooo' \(did you mean 'soo'\?\); choose one of: random"):
        check_optimizer("sooo")
    with pytest.raises(ConfigError, match=r"unknown optimizer 'tpe' \(did you mean 'optuna_tpe'\?\)"):
        check_optimizer("tpe")  # Optuna's sampler by its Optuna name
    with pytest.raises(ConfigError, match=r"did you mean 'bamsoo'\?"):
        make_optimizer("bamso", 2, __import__("numpy").random.default_rng(0))
    with pytest.raises(ConfigError, match=r"no option 'n_inti' \(did you mean 'n_init'\?\); its options are"):
        check_optimizer("bo", {"n_inti": 3})


@pytest.mark.parametrize("name, options, message", [
    ("soo", {"K": 1}, "K must be an integer >= 2"),
    ("soo", {"h_max": "nope"}, "h_max must be"),
    ("bamsoo", {"eta": -1}, "eta must be in"),
    ("genetic", {"pop_size": 0}, "pop_size >= 2"),
    ("bo", {"n_init": 0}, "n_init must be >= 1"),
    ("lhs", {"size": 0}, "size must be an integer >= 1"),
    ("direct", {"eps": -1}, "eps must be a number >= 0"),
    ("genetic", {"pop_size": 2.5}, "pop_size must be an integer, got 2.5"),
    ("bo", {"n_init": 5.0}, r"n_init must be an integer \(write 5, not 5.0\)"),
    ("soo", {"h_max": 2.5}, "h_max must be an integer or a string"),
    ("genetic", {"mutation_rate": 2}, r"mutation_rate is a probability in \[0, 1\]"),
    ("local_search", {"kick": -1}, "kick >= 0"),
    ("bo", {"warp": "false"}, "warp must be true or false, got 'false'"),
    ("bo", {"n_init": "10"}, "n_init must be an integer, got '10'"),
    ("grid", {"shuffle": "no"}, "shuffle must be true or false"),
    ("grid", {"levels": "5"}, r"levels must be an integer or a list \(one per variable\)"),
    ("annealing", {"T0": "1"}, "T0 must be a number, got '1'"),
])
def test_option_values_are_checked_with_the_config(name, options, message):
    """The constructor's checks run when the config is read (check, and run before any study
    is created or replaced), not first when the run builds its optimiser."""
    check_optimizer("soo", {"h_max": 3})  # an option of two kinds takes either
    with pytest.raises(ConfigError, match=rf"optimizer '{name}': bad options .*{message}"):
        check_optimizer(name, options)


def test_function_kind_and_scheduler_names():
    with pytest.raises(ConfigError, match=r"'hartman6' \(did you mean 'hartmann6'\?\); choose one of: .*branin"):
        get_function("hartman6")
    with pytest.raises(ConfigError, match=r"type = 'fintune' is unknown \(did you mean 'finetune'\?\); use one of"):
        get_kind("fintune")
    with pytest.raises(ValueError, match=r"'ashha' \(did you mean 'asha'\?\); choose one of asha"):
        make_scheduler("ashha", [1.0, 3.0, 9.0], 3)


GOOD = """
[budget]
trials = 5
[optimizer]
name = "random"
[objective]
type = "function"
name = "branin"
"""

CASES = {
    "table": (GOOD + "[optimiser]\nname = 'bo'\n", "unknown key 'optimiser' (did you mean 'optimizer'?); allowed keys:"),
    "key": (GOOD + "[runner]\nworker = 2\n", "[runner] has an unknown key 'worker' (did you mean 'workers'?)"),
    "optimizer": (GOOD.replace('"random"', '"radnom"'), "unknown optimizer 'radnom' (did you mean 'random'?)"),
    "function": (GOOD.replace('"branin"', '"branni"'), "unknown function 'branni' (did you mean 'branin'?)"),
    "objective key": (GOOD.replace('name = "branin"', 'nmae = "branin"'), "unknown key 'nmae' (did you mean 'name'?)"),
    "scheduler": (GOOD + "[fidelity]\nmin = 1\nmax = 9\nscheduler = 'hyperbnad'\n",
                  "scheduler = 'hyperbnad' is unknown (did you mean 'hyperband'?); use one of: asha"),
    "variable type": (GOOD + "[space.x0]\ntype = 'flaot'\nlow = 0\nhigh = 1\n",
                      "unknown type 'flaot' (did you mean 'float'?)"),
    "finetune table": ('[budget]\ntrials = 2\n[optimizer]\nname = "random"\n[objective]\ntype = "finetune"\n'
                       "[train]\nmax_step = 3\n", "[train] has an unknown key 'max_step' (did you mean 'max_steps'?)"),
}


@pytest.mark.parametrize("case", CASES)
def test_config_files(tmp_path, case):
    text, message = CASES[case]
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "s.toml")
    assert message in str(e.value)


def test_no_suggestion_when_nothing_is_close(tmp_path):
    (tmp_path / "s.toml").write_text(GOOD.replace('"random"', '"zzz"'))
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "s.toml")
    assert "did you mean" not in str(e.value) and "choose one of: random, grid" in str(e.value)


@pytest.mark.parametrize("args, message", [
    (["--optimizers", "random,sooo"], "did you mean 'soo'?"),
    (["--optimizers", "random", "--functions", "brainn"], "did you mean 'branin'?"),
    (["--optimizers", "rnadom", "--scheduler", "asha"], "did you mean 'random'?"),
    (["--optimizers", "random", "--scheduler", "ahsa"], "did you mean 'asha'?"),
])
def test_bench_names(args, message):
    r = CliRunner().invoke(app, ["bench", *args, "--budget", "2", "--seeds", "1"])
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())
