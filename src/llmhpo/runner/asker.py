"""The optimiser, asked in a thread of its own, and how far ahead of free workers to ask."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from llmhpo.optimizers import Candidate, Optimizer


class Asker:
    """The optimiser, asked in a thread of its own so that the driver goes on recording
    finished trials and starting known candidates while it computes. Results that arrive
    during an ask are told right after it (the optimiser is not thread-safe), before the
    next ask."""

    def __init__(self, optimizer: Optimizer, threaded: bool):
        self.optimizer, self.threaded = optimizer, threaded
        self._thread: threading.Thread | None = None
        self._result: tuple[list[Candidate], float] | None = None
        self._error: BaseException | None = None
        self._tells: list[tuple[Candidate, Any, list[float] | None]] = []
        self.seconds = 0.0  # the last ask's duration
        self.stale = False

    def busy(self) -> bool:
        return self._thread is not None

    def tell(self, cand: Candidate, y: Any, constraints: list[float] | None = None) -> None:
        """``y``: a number, or one per objective; None for a failure (``Optimizer.tell``)."""
        if self.busy():
            self._tells.append((cand, y, constraints))
        else:
            self.optimizer.tell(cand, y, constraints)

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
        for cand, y, constraints in self._tells:
            self.optimizer.tell(cand, y, constraints)
        self._tells.clear()
        if self._error is not None:
            e, self._error = self._error, None
            raise e
        if self._result is None:
            return None
        cands, self.seconds = self._result
        self._result = None
        return cands


def lookahead(slots: int, ask_seconds: float, trial_seconds: list[float]) -> int:
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
