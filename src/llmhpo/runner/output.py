"""What a run says: the summary it returns, its lines and progress bar, and the streak of
identical failures that stops it."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from llmhpo._format import fmt
from llmhpo.live import JobProgress, job_column


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
    resource_spent: float | None = None  # with [fidelity]: resource units spent, all runs together
    #: several objectives (the best_* fields are then None): the Pareto set's trial numbers
    pareto: list[int] | None = None
    hypervolume: float | None = None  # of the Pareto set (``Study.hypervolume``)
    #: with [fidelity], stopped by the budget: the next job, which did not fit in what was left
    #: ("promotion", or "job" for a new configuration's); None when none was tried
    unfit: str | None = None


def summary_of(study: Any, stopped: str, seconds: float, complete: int, failed: int, failure: str | None = None,
               spent: float | None = None, unfit: str | None = None) -> RunSummary:
    """The run's summary from its study: the best trial, or with several objectives the Pareto set."""
    cfg = study.config
    best = None if cfg.study.objectives else study.best()
    front = [r.number for r in study.pareto()] if cfg.study.objectives else None
    return RunSummary(cfg.study.name, cfg.study.storage, complete, failed, best.value if best else None,
                      best.params if best else None, best.number if best else None, stopped, seconds, failure,
                      spent, front, study.hypervolume() if front else None, unfit)


@dataclass
class Best:
    value: float
    number: int


def say(mode: str, text: str, console: Any = None) -> None:
    """One line of a run's output: above the bar (``console``: the bar's own), timestamped in
    ``lines`` mode, nothing when quiet."""
    if mode == "bar":
        from rich.console import Console
        from rich.markup import escape

        (console or Console()).print(escape(text), highlight=False, soft_wrap=True)
    elif mode == "lines":
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}", flush=True)


class Reporter:
    """What a run prints. ``bar``: a rich progress bar (trials done, or resource spent with
    [fidelity]; failures; best so far) with one line per finished job above it and a row per
    running trial (its phase and progress); ``lines``: one plain, flushed line per job start,
    phase and end, for logs of batch jobs (nohup, Slurm); ``quiet``: nothing."""

    def __init__(self, mode: str, total: float, done: float, failed: int, best: float | None, name: str,
                 unit: str = "trials"):
        self.mode, self.total, self.unit = mode, total, unit
        self.done, self.failed = done, failed
        self.best = None
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            count = MofNCompleteColumn() if unit == "trials" else TextColumn(
                "{task.completed:.4g}/{task.total:.4g} " + unit)
            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), job_column(count, True),
                              job_column(TextColumn("fail {task.fields[failed]}")),
                              job_column(TextColumn("best {task.fields[best]}")), TimeElapsedColumn())
            self.p.start()
            self.task = self.p.add_task(name, total=total, completed=min(done, total), failed=failed,
                                        best="-" if best is None else f"{best:.6g}")
        self.jobs = JobProgress(self._line, self.p if mode == "bar" else None)

    def _line(self, text: str) -> None:
        say(self.mode, text, self.p.console if self.mode == "bar" else None)

    def started(self, number: int, params: dict[str, Any], label: str = "", key: Any = None) -> None:
        """Trial ``number`` started (as the executor's job ``key``, whose progress it shows)."""
        if key is not None:
            self.jobs.started(key, number)
        if self.mode == "lines":
            what = f"trial {number}" + (f" {label}" if label else "")
            self._line(f"{what} started: " + ", ".join(f"{k}={fmt(v)}" for k, v in params.items()))

    def finished(self, number: int, value: float | None, error: str | None, seconds: float,
                 best: Any, amount: float = 1, label: str = "", verdict: str = "",
                 values: list[float] | None = None) -> None:
        """A job ended; ``values``: several objectives' values (``value`` is the first)."""
        self.done += amount
        self.failed += value is None
        self.best = best
        self.jobs.finished(number)
        done = f"{self.done:.4g}/{self.total:.4g} {self.unit}" if self.unit != "trials" else \
            f"{self.done:.0f}/{self.total} done"
        count = f"[{done}, {self.failed} failed]"
        what = f"trial {number}" + (f" {label}" if label else "")
        if value is None:
            self._line(f"{what} failed after {seconds:.1f} s: {error} {count}")
        else:
            b = "" if best is None else f" (best {best.value:.6g}, trial {best.number})"
            v = f", {verdict}" if verdict else ""
            shown = f"value {value:.6g}" if values is None else "values " + ", ".join(f"{y:.6g}" for y in values)
            self._line(f"{what} done in {seconds:.1f} s: {shown}{v}{b} {count}")
        if self.mode == "bar":
            self.p.update(self.task, completed=min(self.done, self.total), failed=self.failed,
                          best="-" if best is None else f"{best.value:.6g}")

    def note(self, text: str) -> None:
        self._line(text)

    def progress(self, key: Any, phase: str, done: int | None, total: int | None, unit: str = "") -> None:
        """A running job's report (the executor's ``on_progress``)."""
        if self.mode != "quiet":
            self.jobs.report(key, phase, done, total, unit)

    def close(self) -> None:
        if self.mode == "bar":
            self.p.stop()


def output_mode(progress: bool | None) -> str:
    if progress is None:
        return "bar" if sys.stdout.isatty() else "lines"
    return "bar" if progress else "lines"


class FailureStreak:
    """Stops a study after ``n`` trials in a row failed with exactly the same reason (0: never).
    The jobs of a worker pool that lost a process all fail at once: one failure."""

    def __init__(self, n: int):
        self.n, self.reasons, self.reason = n, [], None
        self._pool_died = False

    def new_batch(self) -> None:
        self._pool_died = False

    def add(self, error: str | None) -> bool:
        """Record one finished job (error None: it succeeded); True when the study must stop."""
        if error is None:
            self.reasons.clear()
            return False
        died = error.startswith("worker process died")
        if not (died and self._pool_died):
            self.reasons.append(error)
        self._pool_died = self._pool_died or died
        if self.n and self.reason is None and len(self.reasons) >= self.n and len(set(self.reasons[-self.n:])) == 1:
            self.reason = error
            return True
        return False

    def note(self) -> str:
        return (f"stopping: {self.n} trials in a row failed with: {self.reason} "
                "(set [runner] max_repeated_failures = 0 to go on regardless)")
