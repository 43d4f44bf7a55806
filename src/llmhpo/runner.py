"""The run loop, written once: ask -> submit -> (asynchronous) done -> record -> tell.

Order of writes, so that a crash at any point resumes without losing or repeating a
completed trial: the optimiser state is saved right after ``ask`` (its pending candidates
included), then each candidate gets a RUNNING trial; a finished trial is written first and
told second, then the state is saved again. On resume, a pending candidate whose trial
finished is told from storage; one whose trial was left RUNNING is marked interrupted and
evaluated again; one with no trial at all is submitted.
"""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from llmhpo.config import Config
from llmhpo.executors import Outcome, make_executor
from llmhpo.objectives import build_objective
from llmhpo.optimizers import Candidate, Optimizer, make_optimizer
from llmhpo.study import Study


@dataclass
class RunSummary:
    study: str
    storage: str | None
    complete: int
    failed: int
    best_value: float | None
    best_params: dict[str, Any] | None
    best_number: int | None
    stopped: str  # why the loop ended
    seconds: float
    history: list[float | None] = field(default_factory=list)  # values in completion order


def objective_factory(config: Config) -> Callable[[], Any]:
    """A picklable factory that builds the study's objective inside a worker."""
    if config.objective == "finetune":
        from llmhpo.objectives.finetune import FinetuneObjective

        return functools.partial(FinetuneObjective.from_config_dict, config.to_dict())
    return functools.partial(build_objective, config.objective, dict(config.objective_options))


def build_optimizer(config: Config) -> Optimizer:
    # one stream per component, spawned from the study seed (optimiser first)
    opt_seq = np.random.SeedSequence(config.study.seed).spawn(2)[0]
    return make_optimizer(config.optimizer, config.space.dim, np.random.default_rng(opt_seq),
                          config.budget.trials, config.optimizer_options)


class _Progress:
    """A rich progress bar: trials done, failures, best so far."""

    def __init__(self, enabled: bool, total: int, done: int, direction: str, name: str):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("fail {task.fields[failed]}"), TextColumn("best {task.fields[best]}"),
                          TimeElapsedColumn())
        self.p.start()
        self.task = self.p.add_task(name, total=total, completed=done, failed=0, best="-")

    def update(self, done: int, failed: int, best: float | None) -> None:
        if self.enabled:
            self.p.update(self.task, completed=done, failed=failed, best="-" if best is None else f"{best:.6g}")

    def close(self) -> None:
        if self.enabled:
            self.p.stop()


def run(config: Config, *, overwrite: bool = False, progress: bool = True,
        objective_factory_override: Callable[[], Any] | None = None,
        on_trial: Callable[[int, Outcome], None] | None = None) -> RunSummary:
    """Run (or resume) the study described by ``config`` until its budget is spent."""
    t_start = time.time()
    study = Study.open(config, overwrite=overwrite)
    optimizer = build_optimizer(config)
    state = study.optimizer_state()
    if state is not None:
        optimizer.load_state_dict(state)
    sign = 1.0 if config.study.direction == "minimize" else -1.0  # optimisers minimise
    records = {r.trial_id: r for r in study.records()}

    # ---- reconcile storage with the optimiser after a crash
    by_candidate: dict[int, Any] = {}
    for r in records.values():
        if r.state == "RUNNING":
            study.mark_interrupted(r.trial_id)
            r.interrupted = True
        if r.candidate_id is not None and not r.interrupted:
            by_candidate[r.candidate_id] = r
    to_submit: list[Candidate] = []
    for cand in list(optimizer.pending.values()):
        r = by_candidate.get(cand.id)
        if r is not None and r.state in ("COMPLETE", "FAIL"):
            optimizer.tell(cand, None if r.value is None else sign * r.value)
        else:
            to_submit.append(cand)
    if state is not None:
        study.save_optimizer_state(optimizer.state_dict())

    # ---- warm start: listed configurations first, once per study
    done_ws = {r.attrs.get("warm_start") for r in records.values() if not r.interrupted}
    done_ws |= {c.info.get("warm_start") for c in optimizer.pending.values()}
    for i, params in enumerate(config.warm_start):
        if i not in done_ws:
            to_submit.append(optimizer.register(config.space.encode(params, fill_defaults=True), {"warm_start": i}))
    if to_submit:
        study.save_optimizer_state(optimizer.state_dict())

    def counted() -> tuple[int, int]:
        c = study.counts()
        return c["COMPLETE"], c["FAIL"]

    complete, failed = counted()
    budget = config.budget.trials
    executor = make_executor(objective_factory_override or objective_factory(config), config.runner.workers,
                             config.runner.executor, config.runner.devices)
    running: dict[int, tuple[Candidate, int]] = {}  # candidate id -> (candidate, trial id)
    history: list[float | None] = []
    best = study.best()
    bar = _Progress(progress, budget, min(complete + failed, budget), config.study.direction, config.study.name)
    bar.update(complete + failed, failed, best.value if best else None)

    def submit(cand: Candidate) -> None:
        params = config.space.decode(cand.x)
        extra = {"warm_start": cand.info["warm_start"]} if "warm_start" in cand.info else {}
        tid = study.create_trial(cand, params, extra)
        running[cand.id] = (cand, tid)
        executor.submit(cand.id, params)

    stopped = "budget"
    # SIGTERM (a cluster's job end) stops like Ctrl-C: running trials stay RUNNING and rerun on resume
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.getsignal(signal.SIGTERM) if main_thread else None
    if main_thread:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while True:
            finished = complete + failed
            out_of_time = config.budget.wall_time is not None and time.time() - t_start >= config.budget.wall_time
            if out_of_time:
                stopped = "wall_time"
            free = executor.slots - len(running)
            room = budget - finished - len(running)
            while free > 0 and room > 0 and to_submit and not out_of_time:
                submit(to_submit.pop(0))
                free, room = free - 1, room - 1
            if free > 0 and room > 0 and not out_of_time:
                cands = optimizer.ask(min(free, room))
                if cands:
                    study.save_optimizer_state(optimizer.state_dict())
                    for cand in cands:
                        submit(cand)
                elif not running:
                    stopped = "optimizer exhausted"
                    break
            if not running:
                if finished >= budget:
                    stopped = "budget"
                break
            timeout = None
            if config.budget.wall_time is not None and not out_of_time:
                timeout = max(0.05, config.budget.wall_time - (time.time() - t_start))
            for outcome in executor.wait(timeout=timeout):
                cand, tid = running.pop(outcome.key)
                value = outcome.value
                study.finish_trial(tid, value, outcome.metrics, outcome.timings, outcome.error,
                                   {"worker": outcome.worker} if outcome.worker else None)
                optimizer.tell(cand, None if value is None else sign * value)
                study.save_optimizer_state(optimizer.state_dict())
                if value is None:
                    failed += 1
                else:
                    complete += 1
                history.append(value)
                best = study.best()
                bar.update(complete + failed, failed, best.value if best else None)
                if on_trial is not None:
                    on_trial(complete + failed, outcome)
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_handler)
        executor.close()
        bar.close()
    best = study.best()
    return RunSummary(config.study.name, config.study.storage, complete, failed,
                      best.value if best else None, best.params if best else None,
                      best.number if best else None, stopped, time.time() - t_start, history)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def best_regret(values: list[float | None], f_min: float) -> float:
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return (min(ok) - f_min) if ok else math.inf
