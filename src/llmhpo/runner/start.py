"""``run``: a study from its config to its summary. Checks first (another driver, a
finished budget, the preflight), then starts the workers, opens the study (taking its
driver lease), and hands it to the loop."""

from __future__ import annotations

import multiprocessing as mp
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from llmhpo.config import Config
from llmhpo.errors import ConfigError
from llmhpo.executors import make_executor, runs_inline, startup_note
from llmhpo.runner.loop import Loop, build_optimizer
from llmhpo.runner.output import RunSummary, output_mode, say, summary_of
from llmhpo.runner.reevaluate import reevaluation_queue
from llmhpo.runner.resume import resource_spent
from llmhpo.study import Study


def objective_factory(config: Config) -> Callable[[], Any]:
    """A picklable factory that builds the study's objective inside a worker."""
    return config.kind.factory(config.objective)


def _in_spawned_worker_import() -> bool:
    """True while a spawned worker process re-imports the user's script (multiprocessing's
    own test for it): a study started from there would fight the driver's."""
    return bool(getattr(mp.current_process(), "_inheriting", False))


_MAIN_GUARD = re.compile(r"""^if\s+__name__\s*==\s*['"]__main__['"]\s*:""", re.M)


def refuse_unguarded_script(config: Config) -> None:
    """Raise ConfigError, before any worker starts, when the study runs in worker processes
    and was started from a script without an ``if __name__ == "__main__":`` guard: each
    worker imports the script as ``spawn`` does and would start the study again (and a
    ``python`` objective whose target is the script re-runs it in the driver's preflight)."""
    if _in_spawned_worker_import():
        raise SystemExit("llmhpo: a worker process imported the script that starts the study and reached the "
                         "call again; put the call under `if __name__ == \"__main__\":`")
    if runs_inline(config.runner, config.kind.isolate):
        return
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not (path and Path(path).is_file()):
        return  # python -c, stdin, a notebook: no script for a worker to re-run
    if not _MAIN_GUARD.search(Path(path).read_text(errors="replace")):
        raise ConfigError(f"{path} starts the study at its top level: each worker process re-runs the script "
                          "and would start it again; put the call under `if __name__ == \"__main__\":`")


def run(config: Config, *, overwrite: bool = False, progress: bool | None = None,
        quiet: bool = False, preflight: bool = True) -> RunSummary:
    """Run (or resume) the study described by ``config`` until its budget is spent.

    progress: True for a progress bar, False for one line per trial start and end, None to
    choose by whether stdout is a terminal; quiet: print nothing. The run also stops when
    ``config.runner.max_repeated_failures`` trials in a row fail for the same reason.
    preflight: first check what the objective needs (model, data, tasks, user code), so that
    a study in which every trial would fail stops before its first; raises LlmhpoError.
    """
    refuse_unguarded_script(config)
    from llmhpo.study import open_storage

    mode = "quiet" if quiet else output_mode(progress)
    storage = None  # one storage (one engine) for the whole run
    if _storage_exists(config.study.storage):  # a second driver learns it before the preflight's work
        storage = open_storage(config.study.storage)
        _refuse_if_driven(config, storage)
        finished = None if overwrite else _finished_study(config, storage)
        if finished is not None:  # nothing to do: no preflight, no worker
            say(mode, finished[1])
            return finished[0]
    if preflight:
        from llmhpo.preflight import preflight as check_all

        check_all(config, overwrite=overwrite)  # every problem at once, the storage's and the earlier studies' too
    else:  # the preflight built it: its options on the real space, before a study is created or replaced
        build_optimizer(config)
    from llmhpo.transfer import load as load_transfer

    transfer = load_transfer(config, overwrite=overwrite)  # earlier studies ([warm_start] from): before any compute
    t_start = time.time()
    note = startup_note(config.runner)
    if note is not None:  # it takes seconds: say why nothing happens
        say(mode, note)
    # the workers start first: their start-up (a fork server importing the package, Ray
    # actors) overlaps the storage's opening; they only build the objective on their first trial
    executor = make_executor(objective_factory(config), config.runner, config.kind.isolate)
    try:
        study = Study.open(config, overwrite=overwrite, storage=storage)
    except BaseException:
        executor.close()
        raise
    tracker = None
    try:
        from llmhpo.tracking import open_trackers

        tracker = open_trackers(config, study)  # a missing package or store fails here, before any trial
        if tracker is not None:
            tracker.log_trials(study.records())  # what an earlier run finished (logged once)
        log = (lambda tid: tracker.log_trial(study.record(tid))) if tracker is not None else (lambda tid: None)
        if study.lease is not None:  # alive from here: base scoring can outlast the stale limit
            study.lease.start_heartbeat()
        score_base = config.kind.scores_base(config.objective) and study.base() is None
        before = _used(config, study)
        summary = Loop(config, study, executor, mode, t_start, log, transfer).run(score_base)
        if summary.stopped == "budget" and _used(config, study) == before:  # nothing of what is left fits
            say(mode, _met_budget(config, before))
        return summary
    finally:
        executor.close()
        if tracker is not None:
            tracker.close()
        study.close()


def _finished_study(config: Config, storage: Any) -> tuple[RunSummary, str] | None:
    """(summary, the line saying how to run more) for a stored study whose budget is met,
    counted as the run loops count it, and with nothing running, waiting or left to
    re-evaluate; None when a run has work to do, or the study is new or changed (then
    ``Study.open`` says what to do)."""
    study = Study.peek(storage, config)
    if study is None:
        return None
    counts, records = study.counts(), study.records()
    if counts["RUNNING"] or counts["WAITING"]:
        return None
    used = _used(config, study)
    if config.fidelity is None:
        if used < config.budget.trials or (config.study.reevaluate and reevaluation_queue(config, records)):
            return None
    elif _first_rung_fits(config, used) and study.closed_at() != config.resource_budget():
        return None  # met when not even a new configuration's first rung fits in what is left, or
        # when the last run ended by this budget (its next job did not fit; what waited was pruned)
    spent = used if config.fidelity is not None else None
    summary = summary_of(study, "budget", 0.0, counts["COMPLETE"], counts["FAIL"], None, spent)
    return summary, _met_budget(config, used)


def _used(config: Config, study: Any) -> float:
    """What the study has spent of its budget: resource units with [fidelity], else trials."""
    if config.fidelity is not None:
        return resource_spent(study.records())
    counts = study.counts()
    return counts["COMPLETE"] + counts["FAIL"]


def _first_rung_fits(config: Config, used: float) -> bool:
    """With [fidelity]: whether a new configuration's first rung fits in the resource left."""
    return config.resource_budget() - used >= config.fidelity.rungs()[0] - 1e-9


def _met_budget(config: Config, used: float) -> str:
    """The line saying a study has met its budget, and how to run more."""
    if config.fidelity is None:
        budget, unit, how = config.budget.trials, "trials", "raise [budget] trials (or pass --trials N)"
    else:
        budget, unit = config.resource_budget(), config.fidelity.resource
        how = "raise [budget] resource" if config.budget.resource is not None else \
            "raise [budget] trials (or pass --trials N)"
    left = ""
    if used < budget - 1e-9:
        left = f"; its last run ended with {budget - used:g} left, too little for its next job" \
            if config.fidelity is not None and _first_rung_fits(config, used) \
            else f"; no job fits in the {budget - used:g} left"
    return f"study '{config.study.name}' has met its budget ({used:g} of {budget:g} {unit}{left}); {how} to run more"


def _storage_exists(url: str | None) -> bool:
    """Whether opening ``url`` finds something (a SQLite or journal file that is not there
    yet is not created before the preflight: a config that fails it leaves nothing behind)."""
    from llmhpo.storage import file_path

    if url is None:
        return False
    path = file_path(url)
    return path.exists() if path is not None else url != "sqlite:///:memory:"


def _refuse_if_driven(config: Config, storage: Any) -> None:
    """Raise DriverBusy when another live driver runs the study (read-only look; the lease
    itself is taken when the study opens)."""
    from llmhpo import lease

    if config.study.storage is None:
        return
    row = lease.read(storage, config.study.name)
    if lease.alive(row):
        raise lease.busy(config.study.name, row)
