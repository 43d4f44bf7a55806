"""What a run shows of its jobs while they run (the phase and progress each trial reports
with ``llmhpo.objectives.progress``), and the progress of ``llmhpo bench`` over its runs."""

from __future__ import annotations

import time
from typing import Any, Callable, Hashable


class JobProgress:
    """Progress reports of running jobs, shown as a row per running trial under a rich
    progress bar (``bar``), or else as one plain line per phase of a trial (``line``), so a
    log gets "trial 3: training 16 steps", not a line per step. A job the run did not name
    (``started``) is shown by its key."""

    #: seconds before a trial that comes back to a phase it already showed (training and
    #: validation in turns) may show it again
    every = 5.0

    def __init__(self, line: Callable[[str], None], bar: Any = None):
        self._line, self._bar = line, bar
        self._names: dict[Hashable, tuple[str, int | None]] = {}  # key -> (label, trial number)
        self._rows: dict[Hashable, tuple[Any, str]] = {}  # key -> (rich task id, its phase)
        self._said: dict[Hashable, tuple[str, float, set[str]]] = {}  # key -> (phase, when, phases shown)

    def started(self, key: Hashable, number: int) -> None:
        self.name(key, f"trial {number}", number)

    def name(self, key: Hashable, label: str, number: int | None = None) -> None:
        """Show job ``key``'s reports as ``label`` (trial ``number``'s, if it is one)."""
        self._names[key] = (label, number)
        self._said.pop(key, None)

    def finished(self, number: int) -> None:
        for key, (_, n) in list(self._names.items()):
            if n == number:
                del self._names[key]
                self._said.pop(key, None)
                row = self._rows.pop(key, None)
                if row is not None:
                    self._bar.remove_task(row[0])

    def report(self, key: Hashable, phase: str, done: int | None, total: int | None, unit: str = "") -> None:
        label = self._names.get(key, (f"job {key}", None))[0]
        if self._bar is not None:
            self._show_row(key, label, phase, done, total, unit)
        else:
            self._say(key, label, phase, total, unit)

    def _say(self, key: Hashable, label: str, phase: str, total: int | None, unit: str) -> None:
        now = time.monotonic()
        last, when, shown = self._said.get(key, (None, 0.0, set()))
        if phase == last or (phase in shown and now - when < self.every):
            return
        shown.add(phase)
        self._said[key] = (phase, now, shown)
        amount = "" if total is None else f" {total:g} {unit}".rstrip()
        self._line(f"{label}: {phase}{amount}")

    def _show_row(self, key: Hashable, label: str, phase: str, done: int | None, total: int | None,
                  unit: str) -> None:
        from rich.markup import escape

        count = "" if done is None else f"{done:g}" + ("" if total is None else f"/{total:g}") + (f" {unit}" if unit else "")
        row = self._rows.get(key)
        if row is not None and row[1] != phase:  # a new phase: a fresh row (its own total, its own clock)
            self._bar.remove_task(row[0])
            row = None
        if row is None:
            task = self._bar.add_task(escape(f"  {label} {phase}"), total=total, completed=done or 0,
                                      row=True, count=count)
            self._rows[key] = (task, phase)
        else:
            self._bar.update(row[0], total=total, completed=done or 0, count=count)


def job_column(column: Any, count: bool = False) -> Any:
    """``column`` of a run's progress bar, which shows on a job's row the job's count
    (``count``) or nothing."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class ForJobs(ProgressColumn):
        def render(self, task: Any) -> Any:
            if task.fields.get("row"):
                return Text(task.fields.get("count", "") if count else "")
            return column.render(task)

    return ForJobs()


class RunsProgress:
    """``llmhpo bench``'s progress over its ``total`` runs, on ``console`` (stderr): a bar on
    a terminal, else one line per finished run, ``describe(row)`` saying what it was."""

    def __init__(self, console: Any, total: int, describe: Callable[[Any], str]):
        self.console, self.total, self.describe = console, total, describe
        self.done = 0
        self._bar: Any = None

    def __enter__(self) -> "RunsProgress":
        if self.console.is_terminal:
            from rich.progress import Progress

            self._bar = Progress(console=self.console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task("bench", total=self.total)
        return self

    def __call__(self, row: Any) -> None:
        """One run finished."""
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
        else:
            self.console.print(f"run {self.done}/{self.total}: {self.describe(row)}", markup=False,
                               highlight=False, soft_wrap=True)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
