"""Evaluation with lm-eval-harness on the in-memory adapted model (no save/reload round
trip). The task index is built once per worker; every metric of every task is returned as
``task/metric``."""

from __future__ import annotations

import logging
import os
from typing import Any

from llmhpo.errors import ObjectiveSetupError
from llmhpo.objectives.finetune.config import EvalConfig
from llmhpo.objectives.finetune.tasks import builtin_task_names, write_tasks


def task_manager(cfg: EvalConfig):
    """lm-eval's TaskManager with the builtin tasks and the user's include paths."""
    from lm_eval.tasks import TaskManager

    for name in ("lm-eval", "lm_eval", "lm_eval.api.task", "lm_eval.evaluator"):
        logging.getLogger(name).setLevel(logging.ERROR)
    paths = [str(write_tasks(n_questions=cfg.n_questions))] + [str(p) for p in cfg.include_path]
    for p in cfg.include_path:
        if not os.path.isdir(p):
            raise ObjectiveSetupError(f"[eval] include_path {p!r} is not a folder of lm-eval task YAML files")
    return TaskManager(include_path=paths, verbosity="ERROR")


def check_tasks(tm, cfg: EvalConfig) -> None:
    known = set(tm.all_tasks)
    for t in cfg.tasks:
        if t not in known:
            builtin = ", ".join(builtin_task_names())
            raise ObjectiveSetupError(f"[eval] task {t!r} is not known to lm-eval; builtin offline tasks: {builtin}")


def evaluate(model, tokenizer, tm, cfg: EvalConfig) -> dict[str, float]:
    """Run lm-eval; returns {"task/metric": value} (stderr entries dropped)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=list(cfg.tasks), task_manager=tm, limit=cfg.limit,
                                      num_fewshot=cfg.num_fewshot, log_samples=False, verbosity="ERROR",
                                      bootstrap_iters=0)
    except Exception as e:
        if "offline" in str(e).lower() or "connection" in str(e).lower() or "resolve" in str(e).lower():
            raise ObjectiveSetupError(f"an lm-eval task needs its dataset from the hub and there is no network: "
                                      f"use local tasks ({', '.join(builtin_task_names())}) or [eval] include_path") from e
        raise
    metrics: dict[str, float] = {}
    for task, res in out["results"].items():
        for key, value in res.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or "stderr" in key:
                continue
            metric = key.split(",")[0]
            metrics[f"{task}/{metric}"] = float(value)
    return metrics


def objective_value(metrics: dict[str, Any], name: str) -> float:
    if name not in metrics:
        raise ObjectiveSetupError(f"[eval] objective {name!r} was not produced; the tasks gave: "
                                  f"{', '.join(sorted(metrics)) or 'nothing'}")
    return float(metrics[name])
