"""The executor contract (``Executor``), what a job reports back (``Outcome``, ``Retry``,
``Progress``), the call of an objective that turns any crash into a failed Outcome, and
the job queue with retries and timeouts that the process and Ray executors share."""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Protocol, runtime_checkable

from llmhpo.errors import TrialFailed

#: the runner's callback for progress reports: (key, phase, done, total, unit) -> None
OnProgress = Callable[[Hashable, str, "int | None", "int | None", str], None]


@dataclass
class Outcome:
    """One finished job. value None = failure, with ``error``."""

    key: Hashable
    value: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)
    retries: int = 0  # times the job was started again after losing its worker


@dataclass
class Retry:
    """A job whose worker was lost, started again (for the run's log and the trial's record)."""

    key: Hashable
    reason: str
    attempt: int  # 1 for the first retry


@dataclass
class Progress:
    """A running job's report (``llmhpo.objectives.progress``), sent before its Outcome."""

    key: Hashable
    phase: str
    done: int | None
    total: int | None
    unit: str = ""


@runtime_checkable
class Executor(Protocol):
    """What the runner asks of an executor. Jobs are keyed by the caller (a key stays unique
    while its job runs); ``wait`` hands back their Outcomes in the order they finish."""

    #: how many jobs run at once (the runner keeps this many submitted)
    slots: int
    #: jobs started again since the caller last cleared the list (it clears it after each wait)
    retries: list[Retry]
    #: set by the runner: where the running jobs' progress reports go
    on_progress: OnProgress | None

    def submit(self, key: Hashable, params: dict[str, Any] | None, fidelity: Any = None) -> None:
        """Queue ``objective(params)`` (``params`` None: the objective's ``base()``), with
        ``fidelity`` for a multi-fidelity job."""

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """The Outcomes of the jobs finished by now; blocks until at least one is, or
        ``timeout`` seconds pass; [] at once when nothing is queued or running."""

    def workers(self) -> list[dict[str, Any]]:
        """One dict per worker (host, pid, device, the key of its job as ``trial`` or None,
        ``since``), for ``llmhpo status``."""

    def close(self) -> None:
        """Stop every worker (a running job is killed) and drop the queue."""


@dataclass
class Job:
    key: Hashable
    params: dict[str, Any] | None
    fidelity: Any
    retries: int = 0


def run_objective(objective: Any, key: Hashable, params: dict[str, Any], fidelity: Any = None) -> Outcome:
    """Call the objective (with ``fidelity`` when multi-fidelity; params None: the objective's
    ``base()``, the untuned reference); any exception becomes a failed Outcome with its reason."""
    start = time.time()
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "device": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        if params is None:
            r = objective.base()
        else:
            r = objective(params) if fidelity is None else objective(params, fidelity=fidelity)
        out = Outcome(key, r.value, dict(r.metrics), dict(r.timings), None, worker)
    except TrialFailed as e:
        out = Outcome(key, None, dict(getattr(e, "metrics", {}) or {}), {}, str(e), worker)
    except Exception as e:  # a trial's crash is a trial state, not the study's crash
        tb = traceback.format_exc(limit=8)
        last = traceback.extract_tb(e.__traceback__)[-1]  # where it was raised, for the one-line reason
        where = f" ({os.path.basename(last.filename)}:{last.lineno} in {last.name})"
        out = Outcome(key, None, {"traceback": tb}, {}, f"{type(e).__name__}: {e}{where}", worker)
    except SystemExit as e:  # sys.exit() in the objective ends its trial, not the driver
        out = Outcome(key, None, {}, {}, f"the objective called sys.exit({e.code!r})", worker)
    out.timings.setdefault("trial", time.time() - start)
    out.worker.update(start=start, end=time.time())
    return out


class WorkerObjective:
    """The objective of one worker, built on its first job; a failed set-up fails that job
    and is tried again on the next."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory, self._objective = factory, None

    def __call__(self, key: Hashable, params: dict[str, Any], fidelity: Any) -> Outcome:
        if self._objective is None:
            try:
                self._objective = self._factory()
            except Exception as e:
                return Outcome(key, None, {"traceback": traceback.format_exc(limit=8)}, {},
                               f"objective set-up failed: {type(e).__name__}: {e}",
                               {"host": socket.gethostname(), "pid": os.getpid()})
        return run_objective(self._objective, key, params, fidelity)


class Pool:
    """What the process and Ray executors share: a queue of jobs for their workers, and what
    happens to a job whose worker was lost or ran past the timeout."""

    max_retries: int
    trial_timeout: float | None

    def _init_pool(self, max_retries: int, trial_timeout: float | None) -> None:
        self.max_retries, self.trial_timeout = max_retries, trial_timeout
        self._queue: deque[Job] = deque()
        self.retries: list[Retry] = []
        self.on_progress: OnProgress | None = None

    def submit(self, key: Hashable, params: dict[str, Any] | None, fidelity: Any = None) -> None:
        self._queue.append(Job(key, params, fidelity))
        self._dispatch()

    def _dispatch(self) -> None:
        raise NotImplementedError

    def _retry_or_fail(self, job: Job, reason: str, retry: bool, since: float, worker: dict[str, Any],
                       out: list[Outcome]) -> None:
        """``job``'s worker ended without its result: queue it again (first in line) while
        retries are left, else report it failed with the reason."""
        if retry and job.retries < self.max_retries:
            job.retries += 1
            self.retries.append(Retry(job.key, reason, job.retries))
            self._queue.appendleft(job)
        else:
            what = reason if not job.retries else f"{reason} (after {job.retries} retr{'y' if job.retries == 1 else 'ies'})"
            out.append(Outcome(job.key, None, {}, {"trial": time.time() - since}, what, worker, job.retries))

    def _timed_out(self, job: Job, since: float, worker: dict[str, Any]) -> Outcome:
        return Outcome(job.key, None, {}, {"trial": time.time() - since},
                       f"timeout after {self.trial_timeout:g} s ([runner] trial_timeout)", worker, job.retries)

    def _wait_for(self, deadline: float | None, busy_since: list[float]) -> float | None:
        """How long to block: until ``deadline``, or the first running job's timeout."""
        wait_for = None if deadline is None else max(0.0, deadline - time.time())
        if self.trial_timeout is not None and busy_since:
            left = max(0.0, min(busy_since) + self.trial_timeout - time.time())
            wait_for = left if wait_for is None else min(wait_for, left)
        return wait_for
