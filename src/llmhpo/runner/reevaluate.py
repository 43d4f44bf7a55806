"""``[study] reevaluate``: the best configurations evaluated once more at the end."""

from __future__ import annotations

from typing import Any, Callable

from llmhpo.config import Config
from llmhpo.executors import Executor
from llmhpo.runner.output import Reporter
from llmhpo.study import Study


def reevaluate(config: Config, study: Study, executor: Executor, report: Reporter, log: Callable[[int], None]) -> None:
    """[study] reevaluate: the best configurations once more each, with another seed where the
    objective takes one; ``Study.best`` then ranks them by their mean. A resumed study does
    only those not re-evaluated yet."""
    queue = reevaluation_queue(config, study.records())
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
            report.started(number, r.params, f"(trial {r.number} again, seed {seed})", key=("again", tid))
            executor.submit(("again", tid), config.kind.reseed(config.objective, r.params, seed))
        for out in executor.wait():
            tid, number, r = pending.pop(out.key)
            study.finish_trial(tid, out.value, out.metrics, out.timings, out.error,
                               {"worker": out.worker} if out.worker else None)
            log(tid)
            report.note(f"trial {number} (trial {r.number} again): "
                        + (f"value {out.value:.6g} (first {r.value:.6g})" if out.value is not None
                           else f"failed: {out.error}"))
            report.jobs.finished(number)
        executor.retries.clear()


def reevaluation_queue(config: Config, records: list[Any]) -> list[Any]:
    """The records of the best configurations that ``[study] reevaluate`` has yet to evaluate again."""
    sign = 1.0 if config.study.direction == "minimize" else -1.0
    again = {int(r.attrs["reevaluation_of"]) for r in records
             if "reevaluation_of" in r.attrs and r.state in ("COMPLETE", "FAIL")}
    first = [r for r in records if r.state == "COMPLETE" and "reevaluation_of" not in r.attrs]
    top = sorted(first, key=lambda r: (sign * r.value, r.number))[:config.study.reevaluate]
    return [r for r in top if r.number not in again]
