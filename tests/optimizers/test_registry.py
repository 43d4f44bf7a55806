"""The optimiser table: lazy imports, option names and values checked before anything runs."""

import inspect
import subprocess
import sys

import numpy as np
import optuna
import pytest

from llmhpo.errors import ConfigError
from llmhpo.optimizers import OPTIMIZERS, check_optimizer, make_optimizer, optimizer_options

ORDER = ["random", "grid", "lhs", "sobol", "annealing", "genetic", "local_search", "bo",
         "soo", "bamsoo", "direct", "fda", "optuna_tpe", "optuna_cmaes", "optuna_gp", "optuna_nsga2"]
SAMPLERS = {"optuna_tpe": optuna.samplers.TPESampler, "optuna_cmaes": optuna.samplers.CmaEsSampler,
            "optuna_gp": optuna.samplers.GPSampler, "optuna_nsga2": optuna.samplers.NSGAIISampler}


def test_table_names_and_classes():
    assert list(OPTIMIZERS) == ORDER
    assert len(OPTIMIZERS) == len(ORDER) and "bo" in OPTIMIZERS and "nope" not in OPTIMIZERS
    for name, cls in OPTIMIZERS.items():
        assert cls.name == name
        assert OPTIMIZERS[name] is cls
    with pytest.raises(KeyError):
        OPTIMIZERS["nope"]
    with pytest.raises(TypeError):
        OPTIMIZERS["x"] = OPTIMIZERS["random"]  # read-only


def test_import_and_check_stay_light():
    """Importing the package, listing the names and checking every optimiser's options
    import neither torch nor scipy.stats (seconds of start-up for ``llmhpo status``)."""
    code = (
        "import sys\n"
        "from llmhpo.optimizers import OPTIMIZERS, check_optimizer, Candidate\n"
        "assert not [m for m in sys.modules if m.startswith('llmhpo.optimizers.') and m != 'llmhpo.optimizers.base'], "
        "sorted(sys.modules)\n"
        "names = list(OPTIMIZERS); assert 'bo' in OPTIMIZERS\n"
        "check_optimizer('bo', {'n_init': 5})\n"
        "for n in names: check_optimizer(n, {})\n"
        "check_optimizer('optuna_gp', {'n_startup_trials': 3})\n"
        "heavy = sorted(m for m in ('torch', 'botorch', 'gpytorch', 'scipy.stats') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_unknown_option_lists_the_options():
    with pytest.raises(ConfigError) as e:
        check_optimizer("bo", {"n_ini": 5})
    assert str(e.value) == ("optimizer 'bo' has no option 'n_ini' (did you mean 'n_init'?); its options are: "
                            "n_init, num_restarts, "
                            "raw_samples, kernel, noise, warp, local_starts, failures, fit_maxiter, prior_beta, prior_floor")
    with pytest.raises(ConfigError, match="unknown optimizer 'nope'; choose one of: random, grid"):
        check_optimizer("nope", {})


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_optuna_options_are_the_sampler_arguments(name):
    params = inspect.signature(SAMPLERS[name].__init__).parameters
    expected = [k for k in params if k not in ("self", "seed")]
    assert list(optimizer_options(name)) == expected
    with pytest.raises(ConfigError) as e:
        check_optimizer(name, {"seed": 1})  # llmhpo sets it
    assert str(e.value) == f"optimizer '{name}' has no option 'seed'; its options are: {', '.join(expected)}"
    assert "\n" not in str(e.value)


def test_optuna_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^optimizer 'optuna_tpe' has no option 'n_startup' \(did you mean "
                                          r"'n_startup_trials'\?\); its options are: "
                                          r".*\bn_startup_trials\b"):
        check_optimizer("optuna_tpe", {"n_startup": 5})
    # straight construction (not through make_optimizer) refuses it too
    with pytest.raises(TypeError, match="n_startup"):
        OPTIMIZERS["optuna_tpe"](2, np.random.default_rng(0), None, n_startup=5)


@pytest.mark.parametrize("name, options", [
    ("optuna_tpe", {"n_startup_trials": "ten"}),
    ("optuna_tpe", {"multivariate": 1}),
    ("optuna_gp", {"n_startup_trials": True}),
    ("optuna_gp", {"deterministic_objective": "yes"}),
    ("optuna_cmaes", {"x0": [0.5, 0.5]}),
    ("optuna_cmaes", {"use_separable_cma": True, "with_margin": True}),  # found by the sampler itself
])
def test_optuna_bad_values_are_config_errors(name, options):
    with pytest.raises(ConfigError, match=f"^optimizer '{name}': bad options"):
        check_optimizer(name, options)


@pytest.mark.parametrize("name, options", [
    ("optuna_tpe", {"n_startup_trials": 3, "multivariate": False, "consider_endpoints": True}),
    ("optuna_cmaes", {"sigma0": 0.2, "popsize": 6, "warn_independent_sampling": True}),  # overrides llmhpo's default
    ("optuna_cmaes", {"x0": {"x0": 0.5, "x1": 0.5}}),
    ("optuna_gp", {"n_startup_trials": 3, "deterministic_objective": False}),
])
def test_optuna_good_options_run(name, options):
    check_optimizer(name, options)
    opt = make_optimizer(name, 2, np.random.default_rng(0), 10, options)
    told = []
    for _ in range(4 if name == "optuna_gp" else 8):
        (c,) = opt.ask(1)
        assert c.x.shape == (2,) and np.all((0 <= c.x) & (c.x <= 1))
        told.append((c.x.copy(), float(np.sum((c.x - 0.3) ** 2))))
        opt.tell(c, told[-1][1])
    x, value = opt.best  # the best of what it was told, at the point it was told for
    i = int(np.argmin([v for _, v in told]))
    assert value == told[i][1] and np.array_equal(x, told[i][0])


def test_optuna_defaults_are_llmhpos():
    assert optimizer_options("optuna_tpe")["multivariate"] is True
    assert optimizer_options("optuna_tpe")["n_startup_trials"] == 10
    assert optimizer_options("optuna_cmaes")["warn_independent_sampling"] is False
    assert optimizer_options("optuna_gp")["warn_independent_sampling"] is False


def test_value_errors_of_the_report_optimizers_at_construction():
    with pytest.raises(ConfigError, match="n_init must be >= 1"):
        make_optimizer("bo", 2, np.random.default_rng(0), 10, {"n_init": 0})
