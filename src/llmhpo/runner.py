"""The run loop, written once: ask -> submit -> (asynchronous) done -> record -> tell.

Order of writes, so that a crash at any point resumes without losing or repeating a
completed trial: the optimiser state is saved right after ``ask`` (its pending candidates
included), then each candidate gets a RUNNING trial; a finished trial is written first and
told second, then the state is saved again. On resume, a pending candidate whose trial
finished is told from storage; one whose trial was left RUNNING is marked interrupted and
evaluated again; one with no trial at all is submitted.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmhpo.config import Config
from llmhpo.executors import make_executor
from llmhpo.optimizers import Candidate, Optimizer, make_optimizer
from llmhpo.errors import StudyError
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
    resource_spent: float | None = None  # with [fidelity]: resource units spent, all runs together


def objective_factory(config: Config) -> Callable[[], Any]:
    """A picklable factory that builds the study's objective inside a worker."""
    return config.kind.factory(config.objective)


def build_optimizer(config: Config) -> Optimizer:
    # one stream per component, spawned from the study seed (optimiser first)
    opt_seq = np.random.SeedSequence(config.study.seed).spawn(2)[0]
    # snap: integer and categorical variables are proposed, modelled and de-duplicated as the
    # configuration actually evaluated (rounded), never as the unrounded point
    return make_optimizer(config.optimizer, config.space.dim, np.random.default_rng(opt_seq),
                          config.budget.trials, config.optimizer_options, snap=config.space.snap)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class _Reporter:
    """What a run prints. ``bar``: a rich progress bar (trials done, or resource spent with
    [fidelity]; failures; best so far) with one line per finished job above it; ``lines``:
    one plain, flushed line per job start and end, for logs of batch jobs (nohup, Slurm);
    ``quiet``: nothing."""

    def __init__(self, mode: str, total: float, done: float, failed: int, best: float | None, name: str,
                 unit: str = "trials"):
        self.mode, self.total, self.unit = mode, total, unit
        self.done, self.failed = done, failed
        self.best = None
        if mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            count = MofNCompleteColumn() if unit == "trials" else TextColumn(
                "{task.completed:.4g}/{task.total:.4g} " + unit)
            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), count,
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

    def started(self, number: int, params: dict[str, Any], label: str = "") -> None:
        if self.mode == "lines":
            what = f"trial {number}" + (f" {label}" if label else "")
            self._line(f"{what} started: " + ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()))

    def finished(self, number: int, value: float | None, error: str | None, seconds: float,
                 best: Any, amount: float = 1, label: str = "", verdict: str = "") -> None:
        self.done += amount
        self.failed += value is None
        self.best = best
        done = f"{self.done:.4g}/{self.total:.4g} {self.unit}" if self.unit != "trials" else \
            f"{self.done:.0f}/{self.total} done"
        count = f"[{done}, {self.failed} failed]"
        what = f"trial {number}" + (f" {label}" if label else "")
        if value is None:
            self._line(f"{what} failed after {seconds:.1f} s: {error} {count}")
        else:
            b = "" if best is None else f" (best {best.value:.6g}, trial {best.number})"
            v = f", {verdict}" if verdict else ""
            self._line(f"{what} done in {seconds:.1f} s: value {value:.6g}{v}{b} {count}")
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


class _FailureStreak:
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
    from llmhpo.study import open_storage

    storage = None  # one storage (one engine) for the whole run
    if _storage_exists(config.study.storage):  # a second driver learns it before the preflight's work
        storage = open_storage(config.study.storage)
        _refuse_if_driven(config, storage)
    if preflight:
        config.kind.preflight(config.objective, config.space, config.runner.devices, config.fidelity)
    t_start = time.time()
    # the workers start first: their start-up (a fork server importing the package, Ray
    # actors) overlaps the storage's opening; they only build the objective on their first trial
    executor = make_executor(objective_factory(config), config.runner, config.kind.isolate)
    try:
        study = Study.open(config, overwrite=overwrite, storage=storage)
    except BaseException:
        executor.close()
        raise
    mode = "quiet" if quiet else _output_mode(progress)
    tracker = None
    try:
        from llmhpo.tracking import open_trackers

        tracker = open_trackers(config, study)  # a missing package or store fails here, before any trial
        if tracker is not None:
            tracker.log_trials(study.records())  # what an earlier run finished (logged once)
        log = (lambda tid: tracker.log_trial(study.record(tid))) if tracker is not None else (lambda tid: None)
        if config.fidelity is not None:
            return _run_multifidelity(config, study, executor, mode, t_start, log)
        return _run_single(config, study, executor, mode, t_start, log)
    finally:
        executor.close()
        if tracker is not None:
            tracker.close()
        study.close()


def _check_lease(lease: Any, name: str) -> None:
    """Stop when another driver took the study over (this one missed its heartbeats)."""
    if lease is not None and lease.lost.is_set():
        raise StudyError(f"study '{name}' was taken over by another driver (this one missed "
                         "its heartbeats); stopping without writing more")


def _storage_exists(url: str | None) -> bool:
    """Whether opening ``url`` finds something (a SQLite or journal file that is not there
    yet is not created before the preflight: a config that fails it leaves nothing behind)."""
    if url is None:
        return False
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix):
            return Path(url[len(prefix):]).exists()
    return True


def _refuse_if_driven(config: Config, storage: Any) -> None:
    """Raise DriverBusy when another live driver runs the study (read-only look; the lease
    itself is taken when the study opens)."""
    from llmhpo import lease

    if config.study.storage is None:
        return
    row = lease.read(storage, config.study.name)
    if lease.alive(row):
        raise lease.busy(config.study.name, row)


@dataclass
class _Best:
    value: float
    number: int


class _Asker:
    """The optimiser, asked in a thread of its own so that the driver goes on recording
    finished trials and starting known candidates while it computes. Results that arrive
    during an ask are told right after it (the optimiser is not thread-safe), before the
    next ask."""

    def __init__(self, optimizer: Optimizer, threaded: bool):
        self.optimizer, self.threaded = optimizer, threaded
        self._thread: threading.Thread | None = None
        self._result: tuple[list[Candidate], float] | None = None
        self._error: BaseException | None = None
        self._tells: list[tuple[Candidate, float | None]] = []
        self.seconds = 0.0  # the last ask's duration
        self.stale = False

    def busy(self) -> bool:
        return self._thread is not None

    def tell(self, cand: Candidate, y: float | None) -> None:
        if self.busy():
            self._tells.append((cand, y))
        else:
            self.optimizer.tell(cand, y)

    def _ask(self, n: int) -> None:
        t0 = time.perf_counter()
        try:
            self._result = (self.optimizer.ask(n), time.perf_counter() - t0)
        except BaseException as e:  # re-raised in the driver's thread
            self._error = e

    def start(self, n: int) -> None:
        """Ask for ``n`` candidates: in a thread when workers can run meanwhile (a cheap ask
        is over within a few milliseconds and collected at once), else right here
        (``busy()`` tells which)."""
        if not self.threaded:
            self._ask(n)
            return
        self._thread = threading.Thread(target=self._ask, args=(n,), name="llmhpo-ask", daemon=True)
        self._thread.start()
        self._thread.join(0.005)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the ask to end (``collect`` takes its result)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def collect(self, timeout: float = 0.0) -> list[Candidate] | None:
        """The asked candidates once the ask is over (None while it runs); pending tells applied."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return None
            self._thread = None
        #: results arrived during the ask: an empty answer may not hold any more
        self.stale = bool(self._tells)
        for cand, y in self._tells:
            self.optimizer.tell(cand, y)
        self._tells.clear()
        if self._error is not None:
            e, self._error = self._error, None
            raise e
        if self._result is None:
            return None
        cands, self.seconds = self._result
        self._result = None
        return cands


def _lookahead(slots: int, ask_seconds: float, trial_seconds: list[float]) -> int:
    """Candidates to ask ahead of free workers in a parallel run: one, so that a freed worker
    starts before the finished trial is written down and told; more when asks cost more than
    2% of a trial: as many as workers free up while one ask runs. One worker: none (each
    candidate is asked with every result known: the sequential algorithm)."""
    if slots < 2:
        return 0
    if not trial_seconds or ask_seconds <= 0:
        return 1
    mean = sum(trial_seconds[-20:]) / len(trial_seconds[-20:])
    ratio = ask_seconds / max(mean, 1e-6)
    return 1 if ratio < 0.02 else min(slots, math.ceil(slots * ratio))


def _run_single(config: Config, study: Study, executor: Any, mode: str, t_start: float,
                log: Callable[[int], None]) -> RunSummary:
    """The loop without [fidelity]; ``log(trial_id)`` hands each finished trial to the tracking tools."""
    optimizer = build_optimizer(config)
    state = study.optimizer_state()
    if state is not None:
        optimizer.load_state_dict(state)
    sign = 1.0 if config.study.direction == "minimize" else -1.0  # optimisers minimise
    records = {r.trial_id: r for r in study.records()}

    # ---- reconcile storage with the optimiser after a crash (this driver holds the lease:
    # a trial still RUNNING belonged to a driver that is gone)
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

    c = study.counts()
    complete, failed = c["COMPLETE"], c["FAIL"]
    budget = config.budget.trials
    running: dict[int, tuple[Candidate, int, int]] = {}  # candidate id -> (candidate, trial id, number)
    best = study.best()
    report = _Reporter(mode, budget, complete + failed, failed, best.value if best else None, config.study.name)
    streak = _FailureStreak(config.runner.max_repeated_failures)
    asker = _Asker(optimizer, threaded=executor.slots > 1)
    lease = study.lease
    trial_seconds: list[float] = []
    exhausted = False  # the last ask gave nothing: wait for a result before asking again

    def submit(cand: Candidate) -> None:
        params = config.space.decode(cand.x)
        executor.submit(cand.id, params)  # the worker starts, then the trial is written down
        extra = {"warm_start": cand.info["warm_start"]} if "warm_start" in cand.info else {}
        tid = study.create_trial(cand, params, extra)
        number = study.trial_number(tid)
        running[cand.id] = (cand, tid, number)
        report.started(number, params)

    def publish_workers() -> None:
        if lease is not None:
            numbers = {cid: number for cid, (_, _, number) in running.items()}
            lease.publish([{**w, "trial": numbers.get(w.get("trial"))} for w in executor.workers()])

    stopped = "budget"
    restore_sigterm = _sigterm_as_interrupt()
    if lease is not None:
        lease.start_heartbeat()
    try:
        while True:
            _check_lease(lease, config.study.name)
            finished = complete + failed
            out_of_time = config.budget.wall_time is not None and time.time() - t_start >= config.budget.wall_time
            if out_of_time:
                stopped = "wall_time"
            asked = asker.collect() if asker.busy() else None
            if asked is not None:
                study.save_optimizer_state(optimizer.state_dict())
                to_submit.extend(asked)
                exhausted = not asked and not asker.stale
            # known candidates first: a free worker never waits for the optimiser
            while len(running) < executor.slots and finished + len(running) < budget and to_submit \
                    and not out_of_time:
                submit(to_submit.pop(0))
            free = executor.slots - len(running)
            room = budget - finished - len(running) - len(to_submit)
            want = min(room, free + _lookahead(executor.slots, asker.seconds, trial_seconds) - len(to_submit))
            if want > 0 and not asker.busy() and not out_of_time and not exhausted:
                asker.start(want)
                asked = asker.collect()  # None while a slow ask goes on in its thread
                if asked is not None:
                    study.save_optimizer_state(optimizer.state_dict())
                    exhausted = not asked and not asker.stale
                    to_submit.extend(asked)
                    continue
            publish_workers()
            if not running and not asker.busy() and not (to_submit and not out_of_time
                                                          and finished < budget):
                if exhausted and finished < budget and not out_of_time:
                    stopped = "optimizer exhausted"
                break
            timeout = None
            if asker.busy():
                timeout = 0.02  # look again soon: the ask's candidates start as soon as they exist
            if config.budget.wall_time is not None and not out_of_time:
                left = max(0.05, config.budget.wall_time - (time.time() - t_start))
                timeout = left if timeout is None else min(timeout, left)
            if not running:
                asker.join(timeout or 0.05)
                continue
            streak.new_batch()
            outcomes = executor.wait(timeout=timeout)
            for retry in executor.retries:
                _, tid, number = running[retry.key]
                study.note_retry(tid, retry.attempt, retry.reason)
                report.note(f"trial {number}: {retry.reason}; running it again (retry {retry.attempt} of "
                            f"{config.runner.max_retries})")
            executor.retries.clear()
            for outcome in outcomes:
                cand, tid, number = running.pop(outcome.key)
                value = outcome.value
                if value is None:
                    failed += 1
                else:
                    complete += 1
                # the freed worker first (a known candidate), then the bookkeeping
                if to_submit and complete + failed + len(running) < budget and not out_of_time \
                        and streak.reason is None:
                    submit(to_submit.pop(0))
                study.finish_trial(tid, value, outcome.metrics, outcome.timings, outcome.error,
                                   {"worker": outcome.worker} if outcome.worker else None)
                log(tid)
                asker.tell(cand, None if value is None else sign * value)
                exhausted = False
                if not asker.busy():
                    study.save_optimizer_state(optimizer.state_dict())
                trial_seconds.append(outcome.timings.get("trial", 0.0))
                if value is not None and (best is None or sign * value < sign * best.value):
                    best = _Best(value, number)
                report.finished(number, value, outcome.error, outcome.timings.get("trial", 0.0), best)
                if streak.add(None if value is not None else outcome.error or ""):
                    stopped = "repeated failures"
                    report.note(streak.note())
            if streak.reason is not None:
                break
        if stopped == "budget" and config.study.reevaluate:
            _reevaluate(config, study, executor, report, log)
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise
    finally:
        restore_sigterm()
        executor.close()
        if asker.busy():
            asker.collect(timeout=60)
        try:
            if not (lease is not None and lease.lost.is_set()):
                # trials stopped here (interrupt, wall time, failures) rerun on resume
                for _, tid, _ in running.values():
                    study.mark_interrupted(tid)
                study.save_optimizer_state(optimizer.state_dict())
        finally:  # the bar goes, even when the storage stays locked (StorageBusy)
            report.close()
    best = study.best()
    return RunSummary(config.study.name, config.study.storage, complete, failed,
                      best.value if best else None, best.params if best else None,
                      best.number if best else None, stopped, time.time() - t_start, streak.reason)


def _reevaluate(config: Config, study: Study, executor: Any, report: _Reporter, log: Callable[[int], None]) -> None:
    """[study] reevaluate: the best configurations once more each, with another seed where the
    objective takes one; ``Study.best`` then ranks them by their mean. A resumed study does
    only those not re-evaluated yet."""
    sign = 1.0 if config.study.direction == "minimize" else -1.0
    records = study.records()
    again = {int(r.attrs["reevaluation_of"]) for r in records
             if "reevaluation_of" in r.attrs and r.state in ("COMPLETE", "FAIL")}
    first = [r for r in records if r.state == "COMPLETE" and "reevaluation_of" not in r.attrs]
    top = sorted(first, key=lambda r: (sign * r.value, r.number))[:config.study.reevaluate]
    queue = [r for r in top if r.number not in again]
    if not queue:
        return
    report.note(f"re-evaluating the best {len(queue)} configuration(s) once more ([study] reevaluate)")
    pending: dict[Any, tuple[int, int, Any]] = {}
    while queue or pending:
        while queue and len(pending) < executor.slots:
            r = queue.pop(0)
            seed = config.study.seed + 1000 + r.number
            tid = study.create_reevaluation(r, seed)
            number = study.trial_number(tid)
            pending[("again", tid)] = (tid, number, r)
            report.started(number, r.params, f"(trial {r.number} again, seed {seed})")
            executor.submit(("again", tid), config.kind.reseed(config.objective, r.params, seed))
        for out in executor.wait():
            tid, number, r = pending.pop(out.key)
            study.finish_trial(tid, out.value, out.metrics, out.timings, out.error,
                               {"worker": out.worker} if out.worker else None)
            log(tid)
            report.note(f"trial {number} (trial {r.number} again): "
                        + (f"value {out.value:.6g} (first {r.value:.6g})" if out.value is not None
                           else f"failed: {out.error}"))
        executor.retries.clear()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _sigterm_as_interrupt() -> Callable[[], None]:
    """SIGTERM (a cluster's job end) stops a run like Ctrl-C: running trials are marked to
    rerun on resume. Only the main thread may install it; returns what puts it back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return lambda: signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------- multi-fidelity
def _checkpoint_dir(config: Config, number: int) -> Path:
    fd = config.fidelity
    root = Path(fd.checkpoint_dir).expanduser()
    if not root.is_absolute():
        root = Path(config.base_dir) / root
    return root / config.study.name / "checkpoints" / f"trial-{number}"


def _run_multifidelity(config: Config, study: Study, executor: Any, mode: str, t_start: float,
                       log: Callable[[int], None]) -> RunSummary:
    """The loop with a scheduler: each configuration is one trial that climbs rungs.

    A job brings configuration c to rung k: its trial is RUNNING, the objective continues
    from c's checkpoint and returns the score at r_k, stored as the trial's intermediate
    value at step r_k. Then the trial is COMPLETE (top rung), PRUNED (left behind by a
    synchronous rung, or waiting when the budget is spent), FAIL, or WAITING for a
    promotion. The optimiser is told each configuration's score once, at the rung it
    started at (rung 0 for ASHA and successive halving: every told value has the same
    fidelity). Under Hyperband, whose told scores mix fidelities, a model-based optimiser
    proposes each new configuration from the highest rung with at least d + 2 scores, as BOHB
    does (Falkner, Klein & Hutter 2018): its model is refitted there (``Optimizer.suggest``)
    and the point registered with it. The
    scheduler's state is rebuilt from the trials on resume.
    """
    import numpy as np

    from llmhpo.objectives import Fidelity
    from llmhpo.schedulers import Job, make_scheduler

    fd = config.fidelity
    r = fd.rungs()
    integer = fd.resource != "epochs"
    step_of = [int(v) if integer else k for k, v in enumerate(r)]
    optimizer = build_optimizer(config)
    state = study.optimizer_state()
    if state is not None:
        optimizer.load_state_dict(state)
    sign = 1.0 if config.study.direction == "minimize" else -1.0
    scheduler = make_scheduler(fd.scheduler, r, fd.eta)
    budget = config.resource_budget()

    # ---- rebuild the scheduler from storage
    trials: dict[int, Any] = {}  # config id (trial id) -> record
    unit_x: dict[int, Any] = {}  # config id -> its point of [0, 1]^d
    spent = 0.0
    requeue: list[Job] = []  # jobs cut short by the last run
    by_candidate: dict[int, Any] = {}
    for rec in study.records():
        if "bracket" not in rec.attrs or rec.interrupted:
            continue
        trials[rec.trial_id] = rec
        unit_x[rec.trial_id] = np.asarray(rec.attrs["x"], dtype=float)
        spent += float(rec.attrs.get("resource_spent", 0.0))
        by_candidate[rec.candidate_id] = rec
        c = scheduler.add(rec.trial_id, Job(int(rec.attrs["start_rung"]), int(rec.attrs["bracket"])))
        c.running = None
        for step, v in (rec.intermediate or {}).items():
            c.results[step_of.index(int(step))] = sign * v
        c.promoted = {k for k in c.results if k + 1 in c.results}
        rung = int(rec.attrs.get("rung", c.start_rung))
        if rec.state == "FAIL":
            c.results[rung] = None
            c.stopped = True
        elif rec.state in ("PRUNED", "COMPLETE"):
            c.stopped = rec.state == "PRUNED"
        elif rec.state == "RUNNING" and rung in c.results:
            # killed after the rung's score was stored, before its state: the rung is done
            if rung == scheduler.K:
                study.finish_trial(rec.trial_id, rec.intermediate[step_of[rung]])
            else:
                study.set_waiting(rec.trial_id)
        elif rec.state == "RUNNING" or rec.attrs.get("cut_short_rung") is not None:
            # its job was cut short (a kill, or the last run's stop): again from its checkpoint
            if rec.attrs.get("cut_short_rung") is not None:
                rung = int(rec.attrs["cut_short_rung"])
            c.running = rung
            if c.top is not None and c.top < rung:
                c.promoted.add(c.top)
            requeue.append(Job(rung, c.bracket, rec.trial_id))
    if hasattr(scheduler, "opened"):
        scheduler.opened.sort()
    requeue_all = list(requeue)

    # the optimiser hears each configuration once: at its start rung
    told_by_config: dict[int, Candidate] = {}
    fresh: list[Candidate] = []
    for cand in list(optimizer.pending.values()):
        rec = by_candidate.get(cand.id)
        if rec is None:
            fresh.append(cand)
            continue
        c = scheduler.configs[rec.trial_id]
        if c.start_rung in c.results:
            optimizer.tell(cand, c.results[c.start_rung])
        else:
            told_by_config[rec.trial_id] = cand
    study.save_optimizer_state(optimizer.state_dict())
    done_ws = {rec.attrs.get("warm_start") for rec in trials.values()}
    done_ws |= {c.info.get("warm_start") for c in optimizer.pending.values()}
    for i, params in enumerate(config.warm_start):
        if i not in done_ws:
            fresh.append(optimizer.register(config.space.encode(params, fill_defaults=True), {"warm_start": i}))
    if fresh:
        study.save_optimizer_state(optimizer.state_dict())

    lease = study.lease
    running: dict[int, tuple[int, int, float]] = {}  # config id -> (rung, trial number, planned cost)
    report = _Reporter(mode, budget, spent, 0, None, config.study.name, unit=fd.resource)
    report.best = study.best()
    counts = study.counts()
    complete, failed = counts["COMPLETE"], counts["FAIL"]
    streak = _FailureStreak(config.runner.max_repeated_failures)
    stopped = "budget"

    def cost(cid: int | None, k: int) -> float:
        if cid is None:
            return r[k]
        c = scheduler.configs[cid]
        has_ckpt = c.top is not None and not trials[cid].attrs.get("checkpoint_deleted")
        return r[k] - (r[c.top] if has_ckpt else 0.0)

    def start(job: Job) -> bool:
        """Submit ``job``; False when the optimiser has nothing to propose now."""
        cid = job.config_id
        if cid is None:
            cands = [fresh.pop(0)] if fresh else propose_from_model(job.rung) or optimizer.ask(1)
            if not cands:
                return False
            cand = cands[0]
            unit_x[None] = cand.x
            study.save_optimizer_state(optimizer.state_dict())
            params = config.space.decode(cand.x)
            extra = {"bracket": job.bracket, "start_rung": job.rung, "rung": job.rung, "resource_spent": 0.0}
            if "warm_start" in cand.info:
                extra["warm_start"] = cand.info["warm_start"]
            tid = study.create_trial(cand, params, extra)
            unit_x[tid] = unit_x.pop(None)
            number = study.trial_number(tid)
            trials[tid] = _Trial(number, params, extra)
            scheduler.add(tid, job)
            told_by_config[tid] = cand
            cid = tid
        else:
            if cid not in running and scheduler.configs[cid].running != job.rung:
                scheduler.started(cid, job.rung)
            study.set_running(cid, job.rung)
        rec = trials[cid]
        planned = cost(job.config_id, job.rung)
        running[cid] = (job.rung, rec.number, planned)
        ckpt = _checkpoint_dir(config, rec.number)
        if job.config_id is None:  # a new configuration: nothing of an earlier study's trial of that number
            import shutil

            shutil.rmtree(ckpt, ignore_errors=True)
        if rec.attrs.get("cut_short_rung") is not None:
            rec.attrs["cut_short_rung"] = None
            study.storage.set_trial_user_attr(cid, "cut_short_rung", None)
        if rec.attrs.get("checkpoint_deleted"):  # trains from the start (the flag goes when it has finished)
            ckpt_start = "from the start"
        else:
            ckpt_start = "" if job.rung == scheduler.configs[cid].start_rung else "continued"
        report.started(rec.number, rec.params, f"rung {job.rung} ({_fmt(r[job.rung])} {fd.resource}"
                       + (f", {ckpt_start}" if ckpt_start else "") + ")")
        executor.submit(cid, rec.params, Fidelity(fd.resource, r[job.rung], r[-1], str(ckpt)))
        return True

    def propose_from_model(start_rung: int) -> list[Candidate]:
        """BOHB's proposal, for Hyperband (whose brackets start at different rungs, so the
        optimiser's own history mixes fidelities): the optimiser's model refitted on the highest
        rung with at least d + 2 scores; [] when there is none. With ASHA and SH every told
        score is a rung-0 score, which the optimiser models directly (refitting on a higher
        rung's few scores measured worse: docs/benchmarks.md)."""
        if fd.scheduler != "hyperband":
            return []
        n_min = config.space.dim + 2
        for k in range(scheduler.K, -1, -1):
            scored = [(cid, c.results[k]) for cid, c in scheduler.configs.items() if c.results.get(k) is not None]
            if len(scored) >= n_min:
                X = np.asarray([unit_x[cid] for cid, _ in scored])
                y = np.asarray([v for _, v in scored])
                pending = [unit_x[cid] for cid in running]
                x = optimizer.suggest(X, y, pending)
                if x is None:
                    return []
                cand = optimizer.register(x, {"model_rung": k})
                study.save_optimizer_state(optimizer.state_dict())
                return [cand]
        return []

    def collect_checkpoints() -> None:
        """Delete the checkpoints no promotion can use: stopped and finished configurations,
        and waiting ones ranked below the rung's promotion slots plus keep_checkpoints."""
        import shutil

        keep = scheduler.keep_checkpoints(fd.keep_checkpoints)
        for cid, c in scheduler.configs.items():
            if cid in running or c.running is not None or cid in keep:
                continue
            folder = _checkpoint_dir(config, trials[cid].number)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                if not c.stopped and c.top is not None and c.top < scheduler.K:  # may still be promoted
                    trials[cid].attrs["checkpoint_deleted"] = True
                    study.storage.set_trial_user_attr(cid, "checkpoint_deleted", True)

    restore_sigterm = _sigterm_as_interrupt()
    if lease is not None:
        lease.start_heartbeat()
    try:
        while True:
            _check_lease(lease, config.study.name)
            out_of_time = config.budget.wall_time is not None and time.time() - t_start >= config.budget.wall_time
            if out_of_time:
                stopped = "wall_time"
            idle = False
            while len(running) < executor.slots and not out_of_time and streak.reason is None:
                job = requeue.pop(0) if requeue else scheduler.next_job()
                if job is None:
                    break
                committed = spent + sum(p for _, _, p in running.values())
                if committed + cost(job.config_id, job.rung) > budget + 1e-9:
                    stopped = "budget"
                    if job in requeue_all:
                        requeue.insert(0, job)
                    break
                if not start(job):
                    idle = True
                    break
            if not running:
                if idle:
                    stopped = "optimizer exhausted"
                break
            timeout = None
            if config.budget.wall_time is not None and not out_of_time:
                timeout = max(0.05, config.budget.wall_time - (time.time() - t_start))
            if lease is not None:
                lease.publish([{**w, "trial": trials[w["trial"]].number if w.get("trial") in trials else None}
                                for w in executor.workers()])
            streak.new_batch()
            outcomes = executor.wait(timeout=timeout)
            for retry in executor.retries:
                study.note_retry(retry.key, retry.attempt, retry.reason)
                report.note(f"trial {trials[retry.key].number}: {retry.reason}; running it again "
                            f"(retry {retry.attempt} of {config.runner.max_retries})")
            executor.retries.clear()
            for outcome in outcomes:
                cid = outcome.key
                rung, number, planned = running.pop(cid)
                c = scheduler.configs[cid]
                rec = trials[cid]
                trained = float(outcome.metrics.get("resource_trained", planned))
                if outcome.value is not None:  # a rerun after a kill finds the killed job's work done:
                    trained = max(trained, r[rung] - float(rec.attrs.get("resource_spent", 0.0)))  # still spent
                spent += trained
                rec.attrs["resource_spent"] = float(rec.attrs.get("resource_spent", 0.0)) + trained
                if outcome.value is not None and rec.attrs.get("checkpoint_deleted"):
                    rec.attrs["checkpoint_deleted"] = False  # it has a checkpoint again
                    study.storage.set_trial_user_attr(cid, "checkpoint_deleted", False)
                value = outcome.value
                scheduler.finished(cid, rung, None if value is None else sign * value)
                attrs = {"rung": rung, "resource_spent": rec.attrs["resource_spent"],
                         "metrics": outcome.metrics, "timings": outcome.timings,
                         **({"worker": outcome.worker} if outcome.worker else {})}
                study.report_rung(cid, step_of[rung], value, attrs)
                if rung == c.start_rung and cid in told_by_config:
                    optimizer.tell(told_by_config.pop(cid), None if value is None else sign * value)
                    study.save_optimizer_state(optimizer.state_dict())
                if value is None:
                    study.finish_trial(cid, None, outcome.metrics, outcome.timings, outcome.error)
                    log(cid)
                    failed += 1
                    verdict = "failed"
                elif rung == scheduler.K:
                    study.finish_trial(cid, value, outcome.metrics, outcome.timings)
                    log(cid)
                    complete += 1
                    verdict = "complete"
                else:
                    study.set_waiting(cid)
                    verdict = "waiting"
                for pruned in scheduler.stop_waiting():
                    study.prune(pruned)
                    log(pruned)
                collect_checkpoints()
                best = study.best() if verdict == "complete" else report.best
                report.finished(number, value, outcome.error, outcome.timings.get("trial", 0.0), best,
                                amount=trained, label=f"rung {rung} ({_fmt(r[rung])} {fd.resource})",
                                verdict=verdict if value is not None else "")
                if streak.add(None if value is not None else outcome.error or ""):
                    stopped = "repeated failures"
                    report.note(streak.note())
            if streak.reason is not None:
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        raise
    finally:
        restore_sigterm()
        executor.close()
        try:
            for cid, (rung, _, _) in running.items():  # cut short: waits, and reruns this rung on resume
                study.storage.set_trial_user_attr(cid, "cut_short_rung", rung)
                study.set_waiting(cid)
        finally:  # the bar goes, even when the storage stays locked (StorageBusy)
            report.close()
    if stopped in ("budget", "optimizer exhausted"):
        # the study is over: configurations still waiting for a promotion stop here
        import shutil

        for cid, c in scheduler.configs.items():
            cut_short = c.running is not None and cid not in running  # the budget left no room to rerun it
            if not c.stopped and (c.running is None or cut_short) and c.top is not None and c.top < scheduler.K \
                    and c.results.get(c.top) is not None:
                study.prune(cid)
                log(cid)
                shutil.rmtree(_checkpoint_dir(config, trials[cid].number), ignore_errors=True)
            elif cut_short and c.top is None:
                study.mark_interrupted(cid)
    best = study.best()
    return RunSummary(config.study.name, config.study.storage, complete, failed,
                      best.value if best else None, best.params if best else None,
                      best.number if best else None, stopped, time.time() - t_start, streak.reason, spent)


@dataclass
class _Trial:
    """What the multi-fidelity loop keeps of a trial it created."""

    number: int
    params: dict[str, Any]
    attrs: dict[str, Any]
