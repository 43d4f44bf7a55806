"""Evaluation with lm-eval-harness on the in-memory adapted model (no save/reload round
trip). The task index is built once per worker, and so are the tasks themselves (their
datasets loaded): ``check_tasks`` builds them before the first trial, so that a task whose
data cannot be had or an objective metric no task reports fails there, with one line, and
not in every trial; ``evaluate`` reuses them. Every metric of every task is returned as
``task/metric``.

Evaluation is quiet: the tool prints one line per trial, and lm-eval's, datasets' and
transformers' progress bars (and lm-eval's ``git describe``) would bury it. The requests
scored so far go to ``progress("scoring", k, M, "requests")`` instead. Each task's requests
and seconds per request are returned as ``task/requests`` and ``task/seconds_per_request``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
import warnings
import weakref
from typing import Any

from llmhpo.errors import ObjectiveSetupError
from llmhpo.objectives.finetune.config import EvalConfig
from llmhpo.objectives.finetune.scoring import counting_bar, scoring_lm
from llmhpo.objectives.finetune.tasks import builtin_task_names, write_tasks

#: the batch size "auto" means on a device other than CUDA
AUTO_CPU_BATCH = 8
# the tasks built for a TaskManager, by (task names, num_fewshot): a worker loads their data once
_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def check_tasks(tm, cfg: EvalConfig) -> str:
    """Fail now, with one line, on what would fail every trial: an unknown task, a task whose
    data cannot be loaded, an objective metric the task does not report. Builds the tasks
    (loads their datasets) and keeps them for ``evaluate``; returns a short summary."""
    known = set(tm.all_tasks)
    for t in cfg.tasks:
        if t not in known:
            builtin = ", ".join(builtin_task_names())
            raise ObjectiveSetupError(f"[eval] task {t!r} is not known to lm-eval; builtin offline tasks: {builtin}")
    name, _, metric = cfg.objective.partition("/")
    if name not in cfg.tasks:
        raise ObjectiveSetupError(f"[eval] objective task {name!r} is not in [eval] tasks {list(cfg.tasks)}; add it")
    t0 = time.time()
    tops = _build(tm, cfg)
    seconds = time.time() - t0

    top = tops[name]
    if isinstance(top, list):  # a tag: lm-eval scores its tasks, never the tag itself
        subs = ", ".join(t.task_name for t in top[:3])
        raise ObjectiveSetupError(f"[eval] objective = {cfg.objective!r}: {name} is a tag, which gets no score of "
                                  f"its own; list one of its tasks ({subs}, ...) in [eval] tasks and use it")
    reported = _metrics_of(top)
    if not reported:  # a group without aggregate_metric_list
        sub = top.get_all_tasks()[0].task_name if top.get_all_tasks() else "a subtask"
        raise ObjectiveSetupError(f"[eval] objective = {cfg.objective!r}: group {name} reports no aggregate metric "
                                  f"(its YAML has no aggregate_metric_list); list one of its tasks, e.g. {sub}, "
                                  f"in [eval] tasks and use it")
    if metric not in reported:
        kind = "group" if _is_group(top) else "task"
        raise ObjectiveSetupError(f"[eval] objective = {cfg.objective!r}: {kind} {name} reports {', '.join(reported)}; "
                                  f"use one of {', '.join(f'{name}/{m}' for m in reported)}")
    summary = "; ".join(f"{n}: {', '.join(_metrics_of(o)) if not isinstance(o, list) else 'tag'}"
                        for n, o in tops.items())
    return f"{summary} (built in {seconds:.1f} s)"


def evaluate(model, tokenizer, tm, cfg: EvalConfig) -> dict[str, float]:
    """Run lm-eval; returns {"task/metric": value} (stderr entries dropped)."""
    import lm_eval
    import lm_eval.models.huggingface as hf

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    tasks = _flat(_build(tm, cfg))  # built by check_tasks already, normally: no second load
    lm = scoring_lm()(pretrained=model, tokenizer=tokenizer, batch_size=batch_size(cfg, model),
                      shared_context=cfg.shared_context)
    try:
        with _quiet(), _swapped(hf, "tqdm", counting_bar):
            out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=tm, limit=cfg.limit,
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
    for task, (n, seconds) in lm.scored.items():
        metrics[f"{task}/requests"] = n
        metrics[f"{task}/seconds_per_request"] = seconds / max(n, 1)
    return metrics


def batch_size(cfg: EvalConfig, model) -> int | str:
    """[eval] batch_size for lm-eval: "auto" only on a CUDA device. lm-eval's search (accelerate's
    find_executable_batch_size) runs five passes at 64 rows of the longest request and shrinks
    by 10% on each out-of-memory error, which a CPU seldom raises (Linux overcommits memory and
    kills the process instead): there "auto" is AUTO_CPU_BATCH."""
    if cfg.batch_size == "auto" and next(model.parameters()).device.type != "cuda":
        return AUTO_CPU_BATCH
    return cfg.batch_size


def objective_value(metrics: dict[str, Any], name: str) -> float:
    if name not in metrics:
        raise ObjectiveSetupError(f"[eval] objective {name!r} was not produced; the tasks gave: "
                                  f"{', '.join(sorted(metrics)) or 'nothing'}")
    return float(metrics[name])


# ---------------------------------------------------------------- building the tasks
def _build(tm, cfg: EvalConfig) -> dict[str, Any]:
    """{name: Task | Group | [Task] (a tag)} for [eval] tasks, built once per TaskManager."""
    key = (tuple(cfg.tasks), cfg.num_fewshot)  # simple_evaluate sets num_fewshot on the task objects
    built = _BUILT.setdefault(tm, {})
    if key in built:
        return built[key]
    tops: dict[str, Any] = {}
    import datasets.config

    # datasets pings its S3 bucket to count the loads of its json builder, even for local
    # files: a network call (and a DNS wait, offline) for nothing the task needs
    with _quiet(), _swapped(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False):
        for name in cfg.tasks:
            try:
                loaded = tm.load(name)
            except Exception as e:
                raise ObjectiveSetupError(_build_error(tm, name, e)) from e
            top = loaded.get("groups", {}).get(name, loaded["tasks"].get(name))
            tops[name] = top if top is not None else list(loaded["tasks"].values())  # a tag: its tasks
        try:
            tm.load(_flat(tops))  # objects pass through; this checks no task is listed twice
        except ValueError as e:
            raise ObjectiveSetupError(f"[eval] tasks {list(cfg.tasks)}: {_first_line(e)}; list each task once "
                                      "(a group already includes its tasks)") from e
    built[key] = tops
    return tops


def _flat(tops: dict[str, Any]) -> list:
    return [t for o in tops.values() for t in (o if isinstance(o, list) else [o])]


def _is_group(obj) -> bool:
    from lm_eval.api.group import Group

    return isinstance(obj, Group)


def _metrics_of(obj) -> list[str]:
    """The metrics lm-eval reports for a built task, or a group's aggregate metrics."""
    if _is_group(obj):
        return list(dict.fromkeys(a.metric for a in obj.aggregate_metric_list or []))
    return list(obj.aggregation())


def _build_error(tm, name: str, e: Exception) -> str:
    entry = tm.task_index.get(name)
    yaml_path = getattr(entry, "yaml_path", None)
    missing = _missing_files((getattr(entry, "cfg", None) or {}).get("dataset_kwargs") or {})
    if missing:
        where = missing[0] if os.path.isabs(missing[0]) else f"{missing[0]} ({os.path.abspath(missing[0])})"
        return (f"[eval] task {name!r} cannot load its data: file {where} does not exist "
                f"(dataset_kwargs.data_files in {yaml_path}); fix the path there or write the file")
    text = _first_line(e)
    if isinstance(e, ConnectionError) or "offline" in text.lower() or "couldn't reach" in text.lower():
        return (f"[eval] task {name!r} cannot load its data: {text}; download it once with network (it is then "
                f"cached), or use local tasks ({', '.join(builtin_task_names())}) or [eval] include_path")
    if isinstance(e, FileNotFoundError):
        return f"[eval] task {name!r} cannot load its data: {text}; fix the data path in {yaml_path or 'its YAML'}"
    return (f"[eval] task {name!r} cannot be built: {type(e).__name__}: {text}; fix {yaml_path or 'its YAML'} "
            f"or remove it from [eval] tasks")


def _missing_files(dataset_kwargs: dict) -> list[str]:
    """Local data files a task's YAML names that are not there (``datasets`` reads them relative
    to the working folder; URLs and hub paths are left to it)."""
    files = dataset_kwargs.get("data_files") if isinstance(dataset_kwargs, dict) else None
    paths = files.values() if isinstance(files, dict) else [files]
    flat = [p for v in paths for p in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(p, str)]
    return [p for p in flat if "://" not in p and not glob.glob(os.path.expanduser(p))]


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]


# ---------------------------------------------------------------- quiet evaluation
@contextlib.contextmanager
def _quiet():
    """No progress bars from datasets, huggingface_hub, transformers and lm-eval, and no
    ``fatal: not a git repository`` from lm-eval, for the block; errors and warnings are
    untouched. TQDM_DISABLE cannot do it: tqdm reads it once, when it is imported."""
    import datasets.utils as ds
    import huggingface_hub.utils as hub
    import lm_eval.api.task
    import lm_eval.evaluator
    import transformers.utils.logging as tf
    from lm_eval.loggers.utils import get_commit_from_path

    was_off = (ds.are_progress_bars_disabled(), hub.are_progress_bars_disabled(), not tf.is_progress_bar_enabled())
    with contextlib.ExitStack() as stack:
        _switch(ds.disable_progress_bars)
        _switch(tf.disable_progress_bar)  # and huggingface_hub's
        stack.callback(_restore_bars, ds, hub, tf, was_off)
        # lm-eval has no switch for its "Building contexts" bar (api/task.py)
        stack.enter_context(_swapped(lm_eval.api.task, "tqdm", _no_bar))
        # simple_evaluate shells out to `git describe` for its run info, stderr not captured; lm-eval's
        # own fallback reads .git directly, with no subprocess and no message
        stack.enter_context(_swapped(lm_eval.evaluator, "get_git_commit_hash",
                                     lambda: get_commit_from_path(os.getcwd())))
        yield


def _restore_bars(ds, hub, tf, was_off) -> None:
    ds_off, hub_off, tf_off = was_off
    if not tf_off:
        _switch(tf.enable_progress_bar)  # turns huggingface_hub's on as well
    _switch(hub.disable_progress_bars if hub_off else hub.enable_progress_bars)
    if not ds_off:
        _switch(ds.enable_progress_bars)


def _switch(flip) -> None:
    # an explicit HF_DATASETS_/HF_HUB_DISABLE_PROGRESS_BARS wins, with a warning not worth repeating per trial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flip()


def _no_bar(*args, **kwargs):
    from tqdm import tqdm

    kwargs["disable"] = True
    return tqdm(*args, **kwargs)


@contextlib.contextmanager
def _swapped(module, name: str, value):
    """``module.name = value`` for the block, if lm-eval still has that name."""
    if not hasattr(module, name):
        yield
        return
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)
