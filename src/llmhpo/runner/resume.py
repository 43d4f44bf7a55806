"""Resume: what a study's storage says is put back into the optimiser and the scheduler, so
that a run after a crash, a kill or a stop loses no finished job and runs none twice.

Order of writes that makes this possible: the optimiser state is saved right after each
``ask`` (its pending candidates included), then each candidate gets a RUNNING trial; a
finished job is written first and told second, then the state is saved again. So on resume
a pending candidate whose trial finished is told from storage, and one with no trial at all
is started. A job the last run left unfinished is restarted by its kind: a one-rung trial
(no checkpoint to go on from) is marked interrupted, kept apart from the budget, and its
candidate evaluated again in a new trial; a multi-fidelity configuration keeps its trial and
runs the cut-short rung again from its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmhpo.config import Config
from llmhpo.goals import told
from llmhpo.optimizers import Candidate, Optimizer
from llmhpo.schedulers import Job, Scheduler
from llmhpo.study import Study, TrialRecord
from llmhpo.transfer import Transfer, design_size


@dataclass
class Conf:
    """One configuration of the run: its trial and what the loop keeps of it."""

    number: int
    trial_id: int
    params: dict[str, Any]
    attrs: dict[str, Any]  # the llmhpo attributes the loop reads (resource_spent, checkpoint_deleted, ...)
    x: np.ndarray  # (d,) its point of [0, 1]^d


@dataclass
class Restored:
    """The run's starting point. Keys are candidate ids (one configuration, one candidate)."""

    confs: dict[int, Conf] = field(default_factory=dict)
    requeue: list[Job] = field(default_factory=list)  # jobs cut short by the last run: first
    fresh: list[Candidate] = field(default_factory=list)  # asked but never started, and warm starts
    untold: dict[int, Candidate] = field(default_factory=dict)  # told at their start rung's result
    spent: float = 0.0  # the budget used: trials, or resource units with [fidelity]
    complete: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)  # lines for the run's start


def restore(config: Config, study: Study, optimizer: Optimizer, scheduler: Scheduler, step_of: list[int],
            sign: float, transfer: Transfer | None = None) -> Restored:
    """Rebuild the run from storage (this driver holds the lease: a trial still RUNNING
    belonged to a driver that is gone); writes what reconciling changes. transfer: earlier
    studies' trials (``[warm_start] from``); with use = "design" their best configurations
    not yet evaluated or pending here are queued after the listed ones."""
    records = study.records()
    if config.fidelity is None:
        out = _restore_trials(config, study, optimizer, records)
    else:
        out = _restore_rungs(study, optimizer, scheduler, records, step_of, sign)
    c = study.counts()
    out.complete, out.failed = c["COMPLETE"], c["FAIL"]
    if config.fidelity is None:
        out.spent = float(out.complete + out.failed)
    done = {r.attrs.get("warm_start") for r in records if not r.interrupted}
    done |= {cand.info.get("warm_start") for cand in optimizer.pending.values()}
    for i, params in enumerate(config.warm_start):  # listed configurations first, once per study
        if i not in done:
            out.fresh.append(optimizer.register(config.space.encode(params, fill_defaults=True), {"warm_start": i}))
    if transfer is not None:
        out.notes += _transferred(config, study, optimizer, transfer, out.fresh)
    if (note := unused_prior_note(config)) is not None:
        out.notes.append(note)
    study.save_optimizer_state(optimizer.state_dict())
    return out


def _transferred(config: Config, study: Study, optimizer: Optimizer, transfer: Transfer,
                 fresh: list[Candidate]) -> list[str]:
    """Queue use = "design"'s configurations (a configuration told or pending here already is
    not queued again: a resumed study repeats none); record the sources; the start's notes."""
    study.note_warm_start(transfer.record())
    notes = [transfer.line()]
    if transfer.use == "design":
        for x, label in transfer.design(design_size(config)):
            if not optimizer.is_known(optimizer.snap_point(x)):
                fresh.append(optimizer.register(x, {"transferred": label}))
    elif not optimizer.takes_earlier:
        notes.append(unused_data_note(config.optimizer))
    return notes


def unused_prior_note(config: Config) -> str | None:
    """The note for priors on the variables with an optimiser that does not use them; None
    when there is none to give."""
    from llmhpo.optimizers import OPTIMIZERS

    if not any(v.prior is not None for v in config.space) or OPTIMIZERS[config.optimizer].uses_prior:
        return None
    return (f"priors: {config.optimizer} does not use them (bo, the samplers but grid, the metaheuristics and "
            "the optuna_* samplers do)")


def unused_data_note(optimizer: str) -> str:
    """The note for [warm_start] use = "data" with an optimiser that has no model of earlier trials."""
    return (f"[warm_start] use = \"data\" has no effect on optimizer '{optimizer}' (only bo models earlier "
            "trials); use = \"design\" evaluates the best of them first")


def resource_spent(records: list[TrialRecord]) -> float:
    """Resource units the study's configurations have trained: what a [fidelity] budget counts."""
    return sum(float(r.attrs.get("resource_spent", 0.0)) for r in records if "bracket" in r.attrs and not r.interrupted)


def _restore_trials(config: Config, study: Study, optimizer: Optimizer, records: list[TrialRecord]) -> Restored:
    out = Restored()
    by_candidate: dict[int, TrialRecord] = {}
    for r in records:
        if r.state == "RUNNING":
            study.mark_interrupted(r.trial_id)
            r.interrupted = True
        if r.candidate_id is not None and not r.interrupted:
            by_candidate[r.candidate_id] = r
    for cand in list(optimizer.pending.values()):
        r = by_candidate.get(cand.id)
        if r is not None and r.state in ("COMPLETE", "FAIL"):
            optimizer.tell(cand, *told(config.study.directions, r.value, r.values, r.constraints))
        else:
            out.fresh.append(cand)
    return out


def _restore_rungs(study: Study, optimizer: Optimizer, scheduler: Scheduler, records: list[TrialRecord],
                   step_of: list[int], sign: float) -> Restored:
    out = Restored()
    for rec in records:
        if "bracket" not in rec.attrs or rec.interrupted:
            continue
        cid = rec.candidate_id
        out.confs[cid] = Conf(rec.number, rec.trial_id, rec.params, rec.attrs, np.asarray(rec.attrs["x"], dtype=float))
        out.spent += float(rec.attrs.get("resource_spent", 0.0))
        c = scheduler.add(cid, Job(int(rec.attrs["start_rung"]), int(rec.attrs["bracket"])))
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
            out.requeue.append(Job(rung, c.bracket, cid))
    if hasattr(scheduler, "opened"):
        scheduler.opened.sort()
    # the optimiser hears each configuration once: at its start rung
    for cand in list(optimizer.pending.values()):
        if cand.id not in out.confs:
            out.fresh.append(cand)
            continue
        c = scheduler.configs[cand.id]
        if c.start_rung in c.results:
            optimizer.tell(cand, c.results[c.start_rung])
        else:
            out.untold[cand.id] = cand
    return out
