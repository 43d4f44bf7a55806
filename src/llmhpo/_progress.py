"""Progress inside a running job: the objective says which phase it is in
(``progress("training", 5, 16, "steps")``); the executor that runs the job decides where that
goes (over the worker's pipe to the driver, straight to the driver's display, or nowhere).
With no sink installed, a call costs one test, so an objective may call it every step."""

from __future__ import annotations

import contextlib
import numbers
import time
from typing import Callable, Iterator

#: (phase, done, total, unit) -> None; installed by the executor around one job
Sink = Callable[[str, "int | None", "int | None", str], None]

_sink: Sink | None = None


def progress(phase: str, done: int | None = None, total: int | None = None, unit: str = "") -> None:
    """Report the running job's phase ("loading", "training", "scoring", ...) and, within it,
    ``done`` of ``total`` ``unit`` (e.g. 5 of 16 steps). Does nothing outside a job run by an
    llmhpo executor (the Ray executor shows none)."""
    if not isinstance(phase, str) or not phase:
        raise TypeError(f"progress(phase, ...): phase must be a non-empty text such as 'training', got {phase!r}")
    for name, v in (("done", done), ("total", total)):
        if v is not None and not isinstance(v, numbers.Real):
            raise TypeError(f"progress(..., {name}={v!r}): {name} must be a number or None; pass e.g. int({name})")
    sink = _sink
    if sink is not None:
        sink(phase, done, total, unit)


class Throttled:
    """Passes a report on when its phase changed, when its phase reached its total, or when
    ``every`` seconds passed since the last one passed on: a training loop of thousands of
    steps a second sends a few messages a second, and no phase is lost."""

    def __init__(self, send: Sink, every: float = 0.25):
        self._send, self.every = send, every
        self._phase: str | None = None
        self._last = 0.0

    def __call__(self, phase: str, done: int | None, total: int | None, unit: str) -> None:
        now = time.monotonic()
        ends = done is not None and done == total
        if phase == self._phase and not ends and now - self._last < self.every:
            return
        self._phase, self._last = phase, now
        self._send(phase, done, total, unit)


@contextlib.contextmanager
def reporting(sink: Sink | None) -> Iterator[None]:
    """``progress`` calls go to ``sink`` (throttled) for the block; None: nowhere."""
    global _sink
    old, _sink = _sink, None if sink is None else Throttled(sink)
    try:
        yield
    finally:
        _sink = old
