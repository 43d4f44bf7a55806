"""The run loop, written once: ask -> schedule -> submit -> (asynchronous) done -> record -> tell.

The optimiser decides which configurations to try; a scheduler decides at which rung of
resource each job runs and which configurations go on. Without ``[fidelity]`` (``OneRung``)
every configuration is one job at its only rung and the budget counts trials. With
``[fidelity]`` each configuration is one trial that climbs rungs r_0 < ... < r_K: its rung
scores are its intermediate values; it ends COMPLETE (top rung), PRUNED, FAIL, or waits
(WAITING) for a promotion, which continues from its checkpoint; the budget counts resource.

The optimiser is asked in a thread of its own (``Asker``), a little ahead of free workers,
and told each configuration's score once, at the rung it started at. Under Hyperband a
model-based optimiser proposes from the highest rung with at least d + 2 scores (BOHB,
Falkner et al. 2018); with ``[fidelity] model = "all_rungs"`` (``promote = "model"``) a GP
of every rung's scores proposes (ranks promotions: ``rungs_model.py``). Jobs are keyed by
their candidate's id. Objectives and constraints (``llmhpo.goals``) are read from a trial's
metrics; one relative to the base model's score waits for it. Resume: ``resume.py``.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Hashable

import numpy as np

from llmhpo.config import Config
from llmhpo.errors import StudyError, TrialFailed
from llmhpo.executors import Executor, Outcome
from llmhpo.goals import evaluate, feasible, told
from llmhpo.optimizers import Candidate
from llmhpo.preflight import build_optimizer
from llmhpo.runner import checkpoints
from llmhpo.runner.asker import Asker, lookahead
from llmhpo._format import fmt
from llmhpo.runner.output import Best, FailureStreak, Reporter, RunSummary, summary_of
from llmhpo.runner.reevaluate import reevaluate
from llmhpo.runner.resume import Conf, restore
from llmhpo.runner.rungs_model import AcrossRungs, register_new
from llmhpo.schedulers import Job, OneRung, make_scheduler
from llmhpo.study import Study
from llmhpo.transfer import Transfer

BASE_JOB = ("base",)  # the executor's key of the base-model job (trial jobs have int keys)


@dataclass
class _Running:
    """A job on a worker."""

    rung: int
    planned: float  # budget units it will spend if it trains all it was asked to


class Loop:
    """One run of a study: from its stored state until its budget is spent, its wall time is
    up, the optimiser has nothing left, or the same failure repeats."""

    def __init__(self, config: Config, study: Study, executor: Executor, mode: str, t_start: float,
                 log: Callable[[int], None], transfer: Transfer | None = None):
        self.config, self.study, self.executor, self.log, self.t_start = config, study, executor, log, t_start
        fd = config.fidelity
        if fd is None:
            self.r, self.unit, self.budget = [1.0], "trials", float(config.budget.trials)
            self.step_of, self.scheduler = [0], OneRung()
        else:
            self.r, self.unit, self.budget = fd.rungs(), fd.resource, config.resource_budget()
            self.step_of = [int(v) if fd.integer else k for k, v in enumerate(self.r)]
            self.scheduler = make_scheduler(fd.scheduler, self.r, fd.eta)
        self.multi = fd is not None
        self.sign = 1.0 if config.study.direction == "minimize" else -1.0  # optimisers minimise
        self.optimizer = build_optimizer(config)
        if transfer is not None:  # before the state: earlier studies' data are no part of it
            transfer.prime(self.optimizer, config)
        state = study.optimizer_state()
        if state is not None:
            self.optimizer.load_state_dict(state)
        got = restore(config, study, self.optimizer, self.scheduler, self.step_of, self.sign, transfer)
        base = study.base()
        self.base_metrics = None if base is None else {**base[1], "value": base[0]}
        #: finished trials that wait for the base model's score (their constraints are relative to it)
        self.held: list[Outcome] = []
        self.confs, self.requeue, self.fresh, self.untold = got.confs, got.requeue, got.fresh, got.untold
        self.spent, self.complete, self.failed = got.spent, got.complete, got.failed
        self.running: dict[Hashable, _Running] = {}
        self.side: set[Hashable] = set()  # jobs outside the budget (the base model's score)
        self.asker = Asker(self.optimizer, threaded=executor.slots > 1)
        self.across = AcrossRungs.of(fd, self.optimizer, self.scheduler, self.confs, self.r) if fd else None
        self._update_model()
        self.streak = FailureStreak(config.runner.max_repeated_failures)
        self.best: Any = None if config.study.objectives else study.best()  # several: a Pareto set
        self.report = Reporter(mode, int(self.budget) if fd is None else self.budget, self.spent, self.failed,
                               None if self.best is None else self.best.value, config.study.name,
                               unit="trials" if fd is None else fd.resource)
        self.report.best = self.best
        for line in got.notes:
            self.report.note(line)
        executor.on_progress = self.report.progress
        self.trial_seconds: list[float] = []
        self.exhausted = False  # the last ask gave nothing: wait for a result before asking again
        self.out_of_time = False
        self.stopped = "budget"
        self.unfit: Job | None = None  # the last job found not to fit in the budget left

    # ------------------------------------------------------------------ the loop
    def run(self, score_base: bool = False) -> RunSummary:
        lease = self.study.lease
        restore_sigterm = _sigterm_as_interrupt()
        if score_base:
            self._start_base()
        try:
            while True:
                if lease is not None and lease.lost.is_set():
                    raise StudyError(f"study '{self.config.study.name}' was taken over by another driver (this one "
                                     "missed its heartbeats); stopping without writing more")
                self.out_of_time = self.config.budget.wall_time is not None and \
                    time.time() - self.t_start >= self.config.budget.wall_time
                if self.out_of_time:
                    self.stopped = "wall_time"
                self._take_asked()
                if self._ask(self._fill()):
                    continue  # a cheap ask answered at once: start its candidates
                self._publish_workers()
                if not self.running and not self.side and not self.asker.busy():
                    if self.exhausted and not self.out_of_time and self.streak.reason is None \
                            and not self._budget_stopped():
                        self.stopped = "optimizer exhausted"
                    break
                self._wait()
                if self.streak.reason is not None and not self.side:
                    break
            if self.stopped == "budget" and self.config.study.reevaluate and not self.multi:
                reevaluate(self.config, self.study, self.executor, self.report, self.log)
        except KeyboardInterrupt:
            self.stopped = "interrupted"
            raise
        finally:
            restore_sigterm()
            self._stop()
        if self.multi and self.stopped in ("budget", "optimizer exhausted"):
            checkpoints.close_study(self.config, self.study, self.scheduler, self.confs, self.running, self.log)
            if self.stopped == "budget" and not self.running:
                self.study.note_closed(self.budget)  # a rerun at this budget has nothing to do
        unfit = None if self.unfit is None else "promotion" if self.unfit.config_id is not None else "job"
        return summary_of(self.study, self.stopped, time.time() - self.t_start, self.complete, self.failed,
                          self.streak.reason, self.spent if self.multi else None, unfit)

    def _busy(self) -> int:
        return len(self.running) + len(self.side)

    def _committed(self) -> float:
        return self.spent + sum(j.planned for j in self.running.values())

    def _cost(self, job: Job) -> float:
        """Budget units ``job`` spends: its rung's resource, less what its checkpoint holds."""
        if job.config_id is None:
            return self.r[job.rung]
        c = self.scheduler.configs[job.config_id]
        has_ckpt = c.top is not None and not self.confs[job.config_id].attrs.get("checkpoint_deleted")
        return self.r[job.rung] - (self.r[c.top] if has_ckpt else 0.0)

    def _fill(self) -> int:
        """Start jobs on the free workers; returns how many free workers wait for a new
        configuration from the optimiser."""
        waiting = 0
        while self._busy() < self.executor.slots and not self.out_of_time and self.streak.reason is None:
            job = self.requeue[0] if self.requeue else self.scheduler.next_job()
            if job is None:
                break
            if not self._fits(job):
                self.stopped, self.unfit = "budget", job
                break
            cand = None
            if job.config_id is None:
                cand = self._candidate(job.rung)
                if cand is None:
                    waiting = self.executor.slots - self._busy()
                    break
            if self.requeue and job is self.requeue[0]:
                self.requeue.pop(0)
            self._start(job, cand)
        return waiting

    def _candidate(self, rung: int) -> Candidate | None:
        """A new configuration's candidate: one asked before, or (Hyperband) the model's proposal."""
        if self.fresh:
            return self.fresh.pop(0)
        if self.across is not None and self.across.proposes and not self.asker.busy():
            x = self.across.propose([self.confs[cid].x for cid in self.running])
            return None if x is None else self._register(x, {"model": "all_rungs"})
        if self.multi and self.config.fidelity.scheduler == "hyperband" and not self.asker.busy():
            return self._propose_from_model(rung)
        return None

    def _ask(self, waiting: int) -> bool:
        """Ask the optimiser for the waiting workers plus a look-ahead (in a thread when workers
        run meanwhile); True when candidates came at once."""
        if self.asker.busy() or self.out_of_time or self.exhausted or self.streak.reason is not None:
            return False
        if self._budget_stopped():  # the next job does not fit: nothing to ask for
            return False
        room = int((self.budget - self._committed()) / self.r[0] + 1e-9) - len(self.fresh)
        # ahead of free workers only where each candidate is one job of the budget: with rungs,
        # promotions take budget that candidates asked ahead would find gone
        ahead = 0 if self.multi else lookahead(self.executor.slots, self.asker.seconds, self.trial_seconds)
        want = min(room, waiting + ahead - len(self.fresh))
        if want <= 0:
            return False
        self.asker.start(want)
        return self._take_asked(started=True)

    def _fits(self, job: Job) -> bool:
        """Whether ``job`` fits in the budget left beside the running jobs."""
        return self._committed() + self._cost(job) <= self.budget + 1e-9

    def _budget_stopped(self) -> bool:
        """Whether the next job does not fit in the budget."""
        job = self.requeue[0] if self.requeue else self.scheduler.next_job()
        if job is None or self._fits(job):
            return False
        self.unfit = job
        return True

    def _take_asked(self, started: bool = False) -> bool:
        """Collect the ask in flight (``started``: the one just started) once it is over; True
        when it gave candidates."""
        if not (started or self.asker.busy()):
            return False
        asked = self.asker.collect()
        if asked is None:
            return False
        self.study.save_optimizer_state(self.optimizer.state_dict())
        self.exhausted = not asked and not self.asker.stale
        self.fresh.extend(asked)
        return bool(asked)

    def _propose_from_model(self, start_rung: int) -> Candidate | None:
        """BOHB's proposal, for Hyperband: the optimiser's model refitted on the highest rung
        with at least d + 2 scores (``Optimizer.suggest``); None when there is none."""
        n_min = self.config.space.dim + 2
        for k in range(self.scheduler.K, -1, -1):
            scored = [(cid, c.results[k]) for cid, c in self.scheduler.configs.items() if c.results.get(k) is not None]
            if len(scored) >= n_min:
                X = np.asarray([self.confs[cid].x for cid, _ in scored])
                y = np.asarray([v for _, v in scored])
                x = self.optimizer.suggest(X, y, [self.confs[cid].x for cid in self.running])
                return None if x is None else self._register(x, {"model_rung": k})
        return None

    def _register(self, x: np.ndarray, info: dict) -> Candidate:
        """A new configuration proposed from a model of the rungs, registered with the optimiser."""
        cand = register_new(self.optimizer, x, info)
        self.study.save_optimizer_state(self.optimizer.state_dict())
        return cand

    def _update_model(self) -> None:  # the state is saved now, or after the ask in flight
        if self.across is not None and self.across.update() and not self.asker.busy():
            self.study.save_optimizer_state(self.optimizer.state_dict())

    # ------------------------------------------------------------------ starting a job
    def _start(self, job: Job, cand: Candidate | None) -> None:
        if cand is not None:
            self._start_new(job, cand)
            return
        cid = job.config_id
        conf = self.confs[cid]
        if cid not in self.running and self.scheduler.configs[cid].running != job.rung:
            self.scheduler.started(cid, job.rung)
        self.study.set_running(conf.trial_id, job.rung)
        if conf.attrs.get("cut_short_rung") is not None:
            conf.attrs["cut_short_rung"] = None
            self.study.resumed(conf.trial_id)
        if conf.attrs.get("checkpoint_deleted"):  # trains from the start (the flag goes when it has finished)
            how = "from the start"
        else:
            how = "" if job.rung == self.scheduler.configs[cid].start_rung else "continued"
        self.running[cid] = _Running(job.rung, self._cost(job))
        self._submit(cid, conf, job.rung, how)

    def _start_new(self, job: Job, cand: Candidate) -> None:
        params = self.config.space.decode(cand.x)
        extra = {k: cand.info[k] for k in ("warm_start", "transferred") if k in cand.info}
        if not self.multi:  # the worker starts, then the trial is written down
            self.running[cand.id] = _Running(job.rung, self._cost(job))
            self.executor.submit(cand.id, params)
        else:
            extra.update(bracket=job.bracket, start_rung=job.rung, rung=job.rung, resource_spent=0.0)
        tid = self.study.create_trial(cand, params, extra)
        conf = Conf(self.study.trial_number(tid), tid, params, extra, np.asarray(cand.x, dtype=float))
        self.confs[cand.id] = conf
        self.scheduler.add(cand.id, job)
        self.untold[cand.id] = cand
        if not self.multi:
            self.report.started(conf.number, params, key=cand.id)
            return
        # a new configuration: nothing of an earlier study's trial of that number
        shutil.rmtree(checkpoints.checkpoint_dir(self.config, conf.number), ignore_errors=True)
        self.running[cand.id] = _Running(job.rung, self._cost(job))
        self._submit(cand.id, conf, job.rung, "")

    def _submit(self, cid: int, conf: Conf, rung: int, how: str) -> None:
        """A multi-fidelity job: bring the configuration to rung ``rung`` from its checkpoint."""
        from llmhpo.objectives import Fidelity

        fd = self.config.fidelity
        self.report.started(conf.number, conf.params, f"rung {rung} ({fmt(self.r[rung])} {fd.resource}"
                            + (f", {how}" if how else "") + ")", key=cid)
        ckpt = checkpoints.checkpoint_dir(self.config, conf.number)
        self.executor.submit(cid, conf.params, Fidelity(fd.resource, self.r[rung], self.r[-1], str(ckpt)))

    def _start_base(self) -> None:
        """Score the untuned objective (the base model without an adapter) as a job beside the
        first trials; its worker keeps the loaded model for the trials that follow."""
        self.report.note("scoring the base model once (no adapter), the reference for every trial "
                         "([eval] base = false skips it)")
        self.report.jobs.name(BASE_JOB, "base model")
        self.side.add(BASE_JOB)
        self.executor.submit(BASE_JOB, None)

    # ------------------------------------------------------------------ results
    def _wait(self) -> None:
        timeout = 0.02 if self.asker.busy() else None  # its candidates start as soon as they exist
        wall = self.config.budget.wall_time
        if wall is not None and not self.out_of_time:
            left = max(0.05, wall - (time.time() - self.t_start))
            timeout = left if timeout is None else min(timeout, left)
        if not self.running and not self.side:
            self.asker.join(timeout or 0.05)
            return
        self.streak.new_batch()
        outcomes = self.executor.wait(timeout=timeout)
        for retry in self.executor.retries:
            if retry.key in self.side:
                self.report.note(f"base model scoring: {retry.reason}; running it again (retry {retry.attempt})")
                continue
            conf = self.confs[retry.key]
            self.study.note_retry(conf.trial_id, retry.attempt, retry.reason)
            self.report.note(f"trial {conf.number}: {retry.reason}; running it again (retry {retry.attempt} of "
                             f"{self.config.runner.max_retries})")
        self.executor.retries.clear()
        for outcome in outcomes:
            if outcome.key in self.side:
                self._base_done(outcome)
            elif BASE_JOB in self.side and outcome.value is not None and \
                    any(c.relative for c in self.config.constraints):
                self.held.append(outcome)  # its worker stays counted busy until the base is in
            else:
                self._finished(outcome)

    def _base_done(self, out: Outcome) -> None:
        self.side.discard(out.key)
        if out.value is None:
            if any(c.relative for c in self.config.constraints):
                raise StudyError(f"base model scoring failed: {out.error}; a [[constraint]] relative to \"base\" "
                                 "needs its score: fix the failure and resume, or give the bound as a number")
            self.report.note(f"base model scoring failed: {out.error}; the study goes on without a reference")
            return
        self.study.set_base(out.value, out.metrics)
        self.base_metrics = {**out.metrics, "value": out.value}
        self.report.note(f"base model: value {out.value:.6g} ({self.config.kind.describe(self.config.objective)}), "
                         f"scored in {out.timings.get('trial', 0.0):.0f} s")
        held, self.held = self.held, []
        for outcome in held:
            self._finished(outcome)

    def _goals(self, outcome: Outcome) -> tuple[Outcome, list[float] | None, list[float] | None]:
        """(outcome, objective values, constraint values) of a finished trial; one whose
        results lack a metric they name becomes a failure saying which."""
        if outcome.value is None or not (self.config.study.objectives or self.config.constraints):
            return outcome, None, None
        try:
            values, cons = evaluate(self.config.study.objectives, self.config.constraints, outcome.value,
                                    outcome.metrics, outcome.timings, self.base_metrics)
        except TrialFailed as e:
            return replace(outcome, value=None, error=str(e)), None, None
        return outcome, values, cons

    def _finished(self, outcome: Outcome) -> None:
        cid = outcome.key
        job = self.running.pop(cid)
        conf, c = self.confs[cid], self.scheduler.configs[cid]
        outcome, values, cons = self._goals(outcome)
        value = outcome.value
        trained = self._trained(outcome, job, conf)
        self.scheduler.finished(cid, job.rung, None if value is None else self.sign * value)
        self._update_model()
        if self.scheduler.K == 0:  # no result changes the next job: the freed worker first, then the bookkeeping
            self._fill()
        if value is None:
            verdict = "failed"
        else:
            verdict = "complete" if job.rung == self.scheduler.K else "waiting"
        self._record(outcome, conf, job.rung, verdict, values, cons)
        if job.rung == c.start_rung and cid in self.untold:
            self.asker.tell(self.untold.pop(cid), *told(self.config.study.directions, value, values, cons))
            self.exhausted = False
            if not self.asker.busy():
                self.study.save_optimizer_state(self.optimizer.state_dict())
        for pruned in self.scheduler.stop_waiting():
            self.study.prune(self.confs[pruned].trial_id)
            self.log(self.confs[pruned].trial_id)
        if self.multi:
            checkpoints.collect(self.config, self.study, self.scheduler, self.confs, self.running)
        self.trial_seconds.append(outcome.timings.get("trial", 0.0))
        ok = feasible(cons) and values is None  # several objectives have a Pareto set, not one best
        if verdict == "complete" and ok and (self.best is None or self.sign * value < self.sign * self.best.value):
            self.best = Best(value, conf.number)
        label = f"rung {job.rung} ({fmt(self.r[job.rung])} {self.unit})" if self.multi else ""
        verdict = verdict if self.multi and value is not None else ""
        if not feasible(cons):
            verdict = ", ".join(v for v in (verdict, "infeasible") if v)
        self.report.finished(conf.number, value, outcome.error, outcome.timings.get("trial", 0.0), self.best,
                             amount=trained, label=label, verdict=verdict, values=values)
        if self.streak.add(None if value is not None else outcome.error or ""):
            self.stopped = "repeated failures"
            self.report.note(self.streak.note())

    def _trained(self, outcome: Outcome, job: _Running, conf: Conf) -> float:
        """Budget units the finished job spent (a rerun after a kill finds the killed job's
        work done: still spent)."""
        if not self.multi:
            trained = 1.0
        else:
            trained = float(outcome.metrics.get("resource_trained", job.planned))
            if outcome.value is not None:
                trained = max(trained, self.r[job.rung] - float(conf.attrs.get("resource_spent", 0.0)))
            conf.attrs["resource_spent"] = float(conf.attrs.get("resource_spent", 0.0)) + trained
        self.spent += trained
        return trained

    def _record(self, outcome: Outcome, conf: Conf, rung: int, verdict: str, values: list[float] | None = None,
                constraints: list[float] | None = None) -> None:
        """The finished job written down: its rung's score, then the trial's state."""
        tid, worker = conf.trial_id, ({"worker": outcome.worker} if outcome.worker else {})
        if self.multi:
            if outcome.value is not None and conf.attrs.get("checkpoint_deleted"):
                conf.attrs["checkpoint_deleted"] = False  # it has a checkpoint again
                self.study.note_checkpoint(tid, False)
            attrs = {"rung": rung, "resource_spent": conf.attrs["resource_spent"],
                     "metrics": outcome.metrics, "timings": outcome.timings, **worker}
            if outcome.worker:  # ``worker`` is the last rung's; where each rung ran stays in this list
                conf.attrs["rung_workers"] = attrs["rung_workers"] = \
                    [*conf.attrs.get("rung_workers", []), {"rung": rung, **outcome.worker}]
            self.study.report_rung(tid, self.step_of[rung], outcome.value, attrs)
            worker = {}
        if verdict == "waiting":
            self.study.set_waiting(tid)
            return
        self.study.finish_trial(tid, values if values is not None and outcome.value is not None else outcome.value,
                                outcome.metrics, outcome.timings, outcome.error, worker or None, constraints)
        self.log(tid)
        if verdict == "failed":
            self.failed += 1
        else:
            self.complete += 1

    # ------------------------------------------------------------------ the end
    def _publish_workers(self) -> None:
        lease = self.study.lease
        if lease is not None:
            numbers = {cid: conf.number for cid, conf in self.confs.items() if cid in self.running}
            lease.publish([{**w, "trial": numbers.get(w.get("trial"))} for w in self.executor.workers()])

    def _stop(self) -> None:
        """The run ends (budget, interrupt, error): jobs still running are cut short, to run
        again on resume; the optimiser's state is saved."""
        self.executor.close()
        if self.asker.busy():
            self.asker.collect(timeout=60)
        lease = self.study.lease
        try:
            if not (lease is not None and lease.lost.is_set()):
                for cid, job in self.running.items():
                    if self.multi:
                        self.study.cut_short(self.confs[cid].trial_id, job.rung)
                    else:  # no checkpoint to go on from: evaluated again, in a new trial
                        self.study.mark_interrupted(self.confs[cid].trial_id)
                self.study.save_optimizer_state(self.optimizer.state_dict())
        finally:  # the bar goes, whatever the storage says
            self.report.close()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _sigterm_as_interrupt() -> Callable[[], None]:
    """SIGTERM (a cluster's job end) stops a run like Ctrl-C: running jobs are cut short, to
    run again on resume. Only the main thread may install it; returns what puts it back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    return lambda: signal.signal(signal.SIGTERM, old)
