"""The recorded LoRA benchmark: real evaluations of the offline fine-tuning objective, and a
surrogate fitted on them that the bench runs as a problem family in milliseconds.

The table (``objectives/data/lora_smollm2.csv``, written by ``benchmarks/record_lora.py``): the demo's
objective (SmolLM2-135M-Instruct, LoRA on the builtin addition task, lm-eval's accuracy on
held-out questions) over the report's five-variable space, each configuration trained once
through a 3-rung schedule (steps 4, 8, 16 of one continued run) and scored at every rung; a
share of the configurations was trained with three seeds, which measures the noise.

The surrogate: a random forest (scikit-learn; as the surrogate benchmarks of Eggensperger et
al. 2015 and HPOBench) on the configuration's unit coordinates in the paper space and the
rung (log2 of the steps), predicting the accuracy. Its held-out error (``cross_validated``:
5 folds grouped by configuration, so no configuration is in its own test fold) is stated with
the benchmark, beside the seeds' own spread.

As bench problems (``get_function``, which builds the ``Function`` from these):

- ``lora_smollm2``: the top rung, minimised as 1 - accuracy; the landscape is not moved per
  seed (a recorded landscape has its meaning: a prior on the learning rate is a prior on
  this axis), so the seed varies the optimiser only; its ``f_min`` is 1 - the predicted
  accuracy of the best recorded configuration (``best_predicted``): a regret <= 0.01 is
  "within one point of the best recorded score", as the surrogate sees them;
- its learning curve: every rung's prediction, for the multi-fidelity bench (steps 4..16,
  interpolated in log2 of the steps between rungs).
"""

from __future__ import annotations

import csv
import functools
import math
from importlib import resources
from pathlib import Path

import numpy as np

#: the recorded schedule's rungs (steps) and the top one
RUNGS = (4, 8, 16)
TOP = RUNGS[-1]
VARIABLES = ("learning_rate", "lora_rank", "lora_alpha", "lora_dropout", "weight_decay")


def table_path() -> Path:
    return Path(str(resources.files("llmhpo").joinpath("objectives/data/lora_smollm2.csv")))


@functools.lru_cache(maxsize=4)
def load(path: str | None = None) -> dict[str, np.ndarray]:
    """The recorded rows that scored: config, seed, rung (n,), unit (n, 5) coordinates in the
    paper space, acc (n,) the task accuracy, general (n,) the general questions' accuracy."""
    from llmhpo.objectives.finetune.presets import paper_space

    space = paper_space()
    rows = []
    with open(path or table_path(), newline="") as f:
        for r in csv.DictReader(f):
            if r.get("add_acc") in (None, ""):
                continue  # a diverged run's missing rungs
            params = {"learning_rate": float(r["learning_rate"]), "lora_rank": int(r["lora_rank"]),
                      "lora_alpha": int(r["lora_alpha"]), "lora_dropout": float(r["lora_dropout"]),
                      "weight_decay": float(r["weight_decay"])}
            rows.append((int(r["config"]), int(r["seed"]), int(r["rung"]), space.encode(params),
                         float(r["add_acc"]), float(r["general_acc"] or "nan")))
    if not rows:
        raise ValueError(f"{path or table_path()} holds no recorded evaluation")
    config, seed, rung, unit, acc, general = zip(*rows)
    return {"config": np.array(config), "seed": np.array(seed), "rung": np.array(rung), "unit": np.array(unit),
            "acc": np.array(acc), "general": np.array(general)}


def _features(unit: np.ndarray, rung: np.ndarray) -> np.ndarray:
    return np.column_stack([unit, np.log2(np.asarray(rung, dtype=float) / TOP)])


def _forest(seed: int = 0):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=1)


@functools.lru_cache(maxsize=4)
def surrogate(path: str | None = None):
    """The random forest fitted on every recorded row (all seeds, all rungs)."""
    t = load(path)
    return _forest().fit(_features(t["unit"], t["rung"]), t["acc"])


def predict(unit: np.ndarray, rung: float = TOP, path: str | None = None) -> np.ndarray:
    """Predicted accuracy at (m, 5) unit points after ``rung`` steps (4 <= rung <= 16; between
    rungs, linear in log2 of the steps)."""
    unit = np.atleast_2d(np.asarray(unit, dtype=float))
    model = surrogate(path)
    r = min(max(float(rung), RUNGS[0]), TOP)
    lo = max(x for x in RUNGS if x <= r)
    hi = min(x for x in RUNGS if x >= r)
    p_lo = model.predict(_features(unit, np.full(len(unit), lo)))
    if hi == lo:
        return p_lo
    w = (math.log2(r) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
    return (1 - w) * p_lo + w * model.predict(_features(unit, np.full(len(unit), hi)))


def best_recorded(path: str | None = None) -> float:
    """The best mean accuracy over seeds of a configuration at the top rung."""
    t = load(path)
    top = t["rung"] == TOP
    means = {c: t["acc"][top & (t["config"] == c)].mean() for c in np.unique(t["config"][top])}
    return float(max(means.values()))


def best_predicted(path: str | None = None) -> float:
    """The best recorded configuration as the surrogate sees it: the highest predicted accuracy
    at the top rung over the recorded configurations (the bench problem's optimum; the
    forest averages, so it sits a little below the best single recording)."""
    t = load(path)
    return float(predict(np.unique(t["unit"], axis=0), TOP, path).max())


def seed_spread(path: str | None = None) -> dict[str, float]:
    """The noise: the standard deviation of the accuracy across seeds of one configuration,
    pooled over the repeated configurations, per rung."""
    t = load(path)
    out = {}
    for r in RUNGS:
        devs, dof = 0.0, 0
        for c in np.unique(t["config"]):
            a = t["acc"][(t["config"] == c) & (t["rung"] == r)]
            if len(a) > 1:
                devs += float(((a - a.mean()) ** 2).sum())
                dof += len(a) - 1
        out[str(r)] = math.sqrt(devs / dof) if dof else math.nan
    return out


def cross_validated(path: str | None = None, folds: int = 5) -> dict[str, float]:
    """Held-out error of the surrogate: folds grouped by configuration; mean absolute error and
    root mean square error over every rung and at the top rung, and the Spearman correlation
    of prediction and recorded accuracy at the top rung."""
    from scipy.stats import spearmanr
    from sklearn.model_selection import GroupKFold

    t = load(path)
    X, y = _features(t["unit"], t["rung"]), t["acc"]
    pred = np.empty_like(y)
    for train, test in GroupKFold(n_splits=folds).split(X, y, groups=t["config"]):
        pred[test] = _forest().fit(X[train], y[train]).predict(X[test])
    top = t["rung"] == TOP
    err = pred - y
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "mae_top": float(np.abs(err[top]).mean()), "rmse_top": float(np.sqrt((err[top] ** 2).mean())),
            "spearman_top": float(spearmanr(pred[top], y[top]).statistic),
            "configurations": int(len(np.unique(t["config"]))), "rows": int(len(y))}


def value(u: np.ndarray, rung: float = TOP) -> float:
    """1 - predicted accuracy at one unit point (the bench problem, minimised)."""
    return float(1.0 - predict(np.asarray(u, dtype=float)[None, :], rung)[0])


def curve_value(u, r: float, r_max: float) -> float:
    """The learning curve of the multi-fidelity bench: ``value`` after r of r_max steps, the
    recorded schedule scaled onto [r_max / 4, r_max]."""
    return value(np.asarray(u, dtype=float), TOP * min(max(r / r_max, 0.0), 1.0))


def optimum() -> np.ndarray:
    """The recorded configuration (unit point) the surrogate rates best."""
    units = np.unique(load()["unit"], axis=0)
    return units[np.argmax(predict(units))]


def unit_priors() -> dict:
    """name -> ``llmhpo.priors.Prior``: the built-in LoRA prior (``finetune.presets.LORA_PRIOR``)
    on the bench function's unit coordinates x0..x4: each variable's unit coordinate is linear in its value (its logarithm
    for a log variable), so a normal there is a normal here, and the same density on the cube."""
    from llmhpo.objectives.finetune.presets import paper_space
    from llmhpo.priors import Prior, unit_dimension

    return {f"x{i}": Prior(d.mu, d.sd) for i, d in enumerate(map(unit_dimension, paper_space(prior=True)))}
