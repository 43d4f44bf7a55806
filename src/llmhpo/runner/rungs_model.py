"""``[fidelity] model = "all_rungs"`` and ``promote = "model"``: multi-fidelity search that
learns across rungs.

The optimiser's GP over (configuration, rung) (``optimizers/_fidelity_gp.py``) is fitted on
every rung's score of every configuration; with ``model = "all_rungs"`` it proposes each new
configuration (log EI at the top rung), with ``promote = "model"`` it predicts each
configuration's top-rung score, by which the scheduler ranks a rung for promotion
(``Scheduler.predicted``). Promotions rank by rung scores below d + 2
scores; until ``n_init`` configurations are scored the optimiser's own ``ask`` proposes (its
initial design: a space-filling start, not a model of four points). The run loop calls
``update`` after each result and ``propose`` for each new configuration.
"""

from __future__ import annotations

import numpy as np

from llmhpo.optimizers import Candidate
from llmhpo.optimizers._fidelity_gp import rung_coordinate
from llmhpo.runner.resume import Conf
from llmhpo.schedulers import Scheduler


class AcrossRungs:
    """The loop's side of the model: the data from the scheduler's rung records, the
    predictions to the scheduler, the proposals from the optimiser (a ``BayesianOptimization``)."""

    def __init__(self, optimizer, scheduler: Scheduler, confs: dict[int, Conf], rungs: list[float],
                 propose: bool = True, promote: bool = True):
        self.optimizer, self.scheduler, self.confs = optimizer, scheduler, confs
        self.proposes, self.promotes = propose, promote
        self.s = [rung_coordinate(r, rungs[0], rungs[-1]) for r in rungs]  # each rung's input s
        self.n_min = optimizer.dim + 2  # scores before the model ranks promotions
        self.n_init = max(self.n_min, int(getattr(optimizer, "n_init", 0)))  # configurations before it proposes

    def data(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Z (n, d + 1): (x, s) of every successful rung score, y (n,) the scores (minimised),
        and the ids of the configurations scored; in id and rung order, so that the same
        records (a resumed study's) give the same model."""
        rows, y, ids = [], [], []
        for cid in sorted(self.scheduler.configs):
            c = self.scheduler.configs[cid]
            for k in sorted(c.results):
                if c.results[k] is not None:
                    rows.append(np.append(self.confs[cid].x, self.s[k]))
                    y.append(c.results[k])
            if any(v is not None for v in c.results.values()):
                ids.append(cid)
        d = self.optimizer.dim
        return np.asarray(rows, dtype=float).reshape(-1, d + 1), np.asarray(y, dtype=float), ids

    @classmethod
    def of(cls, fidelity, optimizer, scheduler: Scheduler, confs: dict[int, Conf],
           rungs: list[float]) -> "AcrossRungs | None":
        """The model a ``FidelityConfig`` asks for; None when it asks for none."""
        propose, promote = fidelity.model == "all_rungs", fidelity.promote == "model"
        return cls(optimizer, scheduler, confs, rungs, propose, promote) if propose or promote else None

    def update(self) -> bool:
        """Refit on the current results and set the scheduler's predictions; True when the
        hyperparameters changed (the optimiser's state should be saved)."""
        Z, y, ids = self.data()
        if not self.promotes or len(y) < self.n_min:
            self.scheduler.predicted = {}
            return False
        gp = self.optimizer.rungs_gp
        changed = gp.fit(Z, y)
        pred = gp.top_mean(np.asarray([self.confs[cid].x for cid in ids]))
        self.scheduler.predicted = {cid: -float(p) for cid, p in zip(ids, pred)}  # lower is better
        return changed

    def propose(self, pending: list[np.ndarray]) -> np.ndarray | None:
        """A new configuration (x in [0, 1]^d) from the model; None below ``n_init`` scored
        configurations. pending: (d,) configurations running now."""
        Z, y, ids = self.data()
        if not self.proposes or len(ids) < self.n_init:
            return None
        return self.optimizer.suggest_rungs(Z, y, [self.confs[cid].x for cid in ids], pending)


def register_new(optimizer, x: np.ndarray, info: dict) -> Candidate:
    """x (d,), proposed from a model of rung scores, registered with the optimiser as a new
    configuration: one it has seen already is moved to the nearest fresh one, as ``ask`` does
    (a model of one rung does not know the configurations that stopped below it)."""
    x = optimizer.snap_point(x)
    if optimizer.is_known(x):
        fresh = optimizer._fresh_near(x, [])
        if fresh is not None:
            x, info = fresh, dict(info, moved=True)
    return optimizer.register(x, info)
