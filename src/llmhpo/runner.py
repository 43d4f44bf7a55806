"""The run loop, written once: ask -> submit -> (asynchronous) done -> record -> tell.

Order of writes, so that a crash at any point resumes without losing or repeating a
completed trial: the optimiser state is saved right after ``ask`` (its pending candidates
included), then each candidate gets a RUNNING trial; a finished trial is written first and
told second, then the state is saved again. On resume, a pending candidate whose trial
finished is told from storage; one whose trial was left RUNNING is marked interrupted and
evaluated again; one with no trial at all is submitted.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from llmhpo.config import Config
from llmhpo.executors import make_executor
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
    stopped: str  # why the loop ended: budget, wall_time, optimizer exhausted, repeated failures
    seconds: float
    #: the reason of the failures that stopped the study (stopped == "repeated failures")
    failure: str | None = None


def objective_factory(config: Config) -> Callable[[], Any]:
    """A picklable factory that builds the study's objective inside a worker."""
    return config.kind.factory(config.objective)


def build_optimizer(config: Config) -> Optimizer:
    # one stream per component, spawned from the study seed (optimiser first)
    opt_seq = np.random.SeedSequence(config.study.seed).spawn(2)[0]
    return make_optimizer(config.optimizer, config.space.dim, np.random.default_rng(opt_seq),
                          config.budget.trials, config.optimizer_options)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class _Reporter:
    """What a run prints. ``bar``: a rich progress bar (trials done, failures, best so far)
    with one line per finished trial above it; ``lines``: one plain, flushed line per trial
    start and end, for logs of batch jobs (nohup, Slurm); ``quiet``: nothing."""

    def __init__(self, mode: str, total: int, done: int, failed: int, best: float | None, name: str):
        self.mode, self.total = mode, total
        self.done, self.failed = done, failed
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("fail {task.fields[failed]}"), TextColumn("best {task.fields[best]}"),
                              TimeElapsedColumn())
            self.p.start()
            self.task = self.p.add_task(name, total=total, completed=min(done, total), failed=failed,
                                        best="-" if best is None else f"{best:.6g}")

    def _line(self, text: str) -> None:
        if self.mode == "bar":
            from rich.markup import escape

            self.p.console.print(escape(text), highlight=False, soft_wrap=True)
        elif self.mode == "lines":
            print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}", flush=True)

    def started(self, number: int, params: dict[str, Any]) -> None:
        if self.mode == "lines":
            self._line(f"trial {number} started: " + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()))

    def finished(self, number: int, value: float | None, error: str | None, seconds: float,
                 best: Any) -> None:
        self.done += 1
        self.failed += value is None
        count = f"[{self.done}/{self.total} done, {self.failed} failed]"
        if value is None:
            self._line(f"trial {number} failed after {seconds:.1f} s: {error} {count}")
        else:
            b = "" if best is None else f" (best {best.value:.6g}, trial {best.number})"
            self._line(f"trial {number} done in {seconds:.1f} s: value {value:.6g}{b} {count}")
        if self.mode == "bar":
            self.p.update(self.task, completed=min(self.done, self.total), failed=self.failed,
                          best="-" if best is None else f"{best.value:.6g}")

    def note(self, text: str) -> None:
        self._line(text)

    def close(self) -> None:
        if self.mode == "bar":
            self.p.stop()


def _output_mode(progress: bool | None) -> str:
    if progress is None:
        return "bar" if sys.stdout.isatty() else "lines"
    return "bar" if progress else "lines"


def _in_spawned_worker_import() -> bool:
    """True while a spawned worker process re-imports the user's script (multiprocessing's
    own test for it): a study started from there would fight the driver's."""
    return bool(getattr(mp.current_process(), "_inheriting", False))


def run(config: Config, *, overwrite: bool = False, progress: bool | None = None,
        quiet: bool = False, preflight: bool = True) -> RunSummary:
    """Run (or resume) the study described by ``config`` until its budget is spent.

    progress: True for a progress bar, False for one line per trial start and end, None to
    choose by whether stdout is a terminal; quiet: print nothing. The run also stops when
    ``config.runner.max_repeated_failures`` trials in a row fail for the same reason.
    preflight: first check what the objective needs (model, data, tasks, user code), so that
    a study in which every trial would fail stops before its first; raises LlmhpoError.
    """
    if _in_spawned_worker_import():
        raise SystemExit("llmhpo: a worker process imported the script that starts the study and reached the "
                         "call again; put the call under `if __name__ == \"__main__\":`")
    if preflight:
        config.kind.preflight(config.objective, config.space, config.runner.devices)
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
    executor = make_executor(objective_factory(config), config.runner.workers, config.runner.executor,
                             config.runner.devices)
    running: dict[int, tuple[Candidate, int, int]] = {}  # candidate id -> (candidate, trial id, number)
    best = study.best()
    report = _Reporter("quiet" if quiet else _output_mode(progress), budget, complete + failed, failed, 
                       best.value if best else None, config.study.name)
    streak: list[str] = []  # causes of the latest consecutive failures
    failure: str | None = None

    def submit(cand: Candidate) -> None:
        params = config.space.decode(cand.x)
        extra = {"warm_start": cand.info["warm_start"]} if "warm_start" in cand.info else {}
        tid = study.create_trial(cand, params, extra)
        number = study.trial_number(tid)
        running[cand.id] = (cand, tid, number)
        report.started(number, params)
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
            pool_died = False
            for outcome in executor.wait(timeout=timeout):
                cand, tid, number = running.pop(outcome.key)
                value = outcome.value
                study.finish_trial(tid, value, outcome.metrics, outcome.timings, outcome.error,
                                   {"worker": outcome.worker} if outcome.worker else None)
                optimizer.tell(cand, None if value is None else sign * value)
                study.save_optimizer_state(optimizer.state_dict())
                if value is None:
                    failed += 1
                    # the jobs of a worker pool that lost a process all fail at once: one failure
                    died = (outcome.error or "").startswith("worker process died")
                    if not (died and pool_died):
                        streak.append(outcome.error or "")
                    pool_died = pool_died or died
                else:
                    complete += 1
                    streak.clear()
                if value is not None:
                    best = study.best()
                report.finished(number, value, outcome.error, outcome.timings.get("trial", 0.0), best)
                n = config.runner.max_repeated_failures
                if n and failure is None and len(streak) >= n and len(set(streak[-n:])) == 1:
                    failure = outcome.error
                    stopped = "repeated failures"
                    report.note(f"stopping: {n} trials in a row failed with: {failure} "
                                "(set [runner] max_repeated_failures = 0 to go on regardless)")
            if failure is not None:
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_handler)
        executor.close()
        # trials stopped here (interrupt, wall time, failures) rerun on resume
        for _, tid, _ in running.values():
            study.mark_interrupted(tid)
        report.close()
    best = study.best()
    return RunSummary(config.study.name, config.study.storage, complete, failed,
                      best.value if best else None, best.params if best else None,
                      best.number if best else None, stopped, time.time() - t_start, failure)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
