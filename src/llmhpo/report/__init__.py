"""``llmhpo report``: one or several studies as a self-contained HTML page, the same
figures as PNG files beside it, and a Markdown summary.

For each study: the objective per trial and the best so far against the trial number and
wall-clock time (the base model's score as a reference), one panel per other metric,
the trials' loss curves, each hyperparameter against the score, Optuna's parameter
importances, parallel coordinates, and tables of the top trials, the failures and where
the time went. With several studies, first a comparison of their best so far against
trials and compute spent. A study of several objectives has its Pareto front and its
hypervolume against trials and compute instead of the history, and its Pareto set instead
of the top trials (``_front``). ``build_report`` returns the matplotlib figures, so that what is
drawn can be checked; ``write_report`` writes the files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from llmhpo.report._data import StudyData, Trial, metric_name, spans_decades
from llmhpo.report._page import (Section, failure_table, facts, render_html, render_markdown, summary_table,
                                 time_table, top_table)
from llmhpo.report._plots import (plot_comparison, plot_history, plot_importance, plot_metrics, plot_parallel,
                                  plot_params)
from llmhpo.report._curves import plot_curves
from llmhpo.report._front import front_facts, pareto_table, plot_front, plot_hypervolume

DPI = 110


@dataclass
class Report:
    """What ``write_report`` writes, before it is written: figures by file name (open
    matplotlib figures), the documents' sections and title."""

    title: str
    studies: list[StudyData]
    figures: dict[str, object] = field(default_factory=dict)  # "history.png" -> Figure
    sections: list[Section] = field(default_factory=list)

    def figure(self, kind: str, study: str | None = None):
        """The figure of ``kind`` (history, front, hypervolume, metrics, curves, params,
        importance, parallel, compare) of a study (the only one when None)."""
        return self.figures.get(self._file(kind, study))

    def _file(self, kind: str, study: str | None) -> str:
        if kind == "compare" or len(self.studies) == 1:
            return f"{kind}.png"
        prefix = _prefixes(self.studies)[study if study is not None else self.studies[0].name]
        return f"{prefix}-{kind}.png"

    def close(self) -> None:
        import matplotlib.pyplot as plt

        for f in self.figures.values():
            plt.close(f)
        self.figures.clear()


def _prefixes(studies: list[StudyData]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, sd in enumerate(studies):
        out.setdefault(sd.name, sd.name if sd.name not in out.values() else f"{sd.name}-{i}")
    return out


def build_report(studies: Iterable) -> Report:
    """The report of ``studies`` (``llmhpo.study.Study`` objects, or ``StudyData``)."""
    data = [s if isinstance(s, StudyData) else StudyData.of(s) for s in studies]
    if not data:
        raise ValueError("build_report needs at least one study")
    title = (f"Study {data[0].name}" if len(data) == 1 else
             f"{len(data)} studies compared: " + ", ".join(sd.name for sd in data))
    rep = Report(f"llmhpo report: {title}", data)
    if len(data) > 1:
        rep.figures["compare.png"] = plot_comparison(data)
        rep.sections.append(Section(
            "Comparison", [],
            [("compare.png", "Best so far of each study, against the trial number and against the compute spent.",
              "Compute is the trials' own time summed (what a cluster bills), not the wall clock.")],
            [("Studies", summary_table(data), "")]))
    import matplotlib.pyplot as plt

    with plt.rc_context({"figure.max_open_warning": 0}):  # a report holds its figures open on purpose
        for sd in data:
            rep.sections.append(_study_section(rep, sd))
    return rep


def _study_section(rep: Report, sd: StudyData) -> Section:
    figs = []

    def add(kind: str, fig, caption: str, note: str = "") -> None:
        if fig is None:
            return
        name = rep._file(kind, sd.name)
        rep.figures[name] = fig
        figs.append((name, caption, note))

    several = len(sd.objectives) > 1
    if several:
        _front_figures(sd, add)
    else:
        base = f" The dashed line is the base model's {sd.metric} ({sd.base_score:.4g})." if sd.base_score is not None else ""
        add("history", plot_history(sd),
            f"{sd.metric} of each trial and the best so far, against the trial number and the wall-clock time.{base}",
            "Failed trials have no value: they are the crosses on the bottom edge." if sd.failed else "")
    star = "" if several else f"; the star is the best trial by {sd.metric}"
    add("metrics", plot_metrics(sd), f"The other metrics of each complete trial{star}. A validation loss that rises "
        "while the score rises is the sign of overfitting.")
    rungs = (" Scores at each rung: every configuration has a marker at each rung it reached, set a little to the "
             "side of the rung so that equal scores stay apart; grey ones were stopped."
             if any(t.rungs for t in sd.trials) else "")
    add("curves", plot_curves(sd), "Curves recorded during each trial, coloured by the trial's final value"
        + ("." if several else "; the best trial in bold.") + rungs)
    add("params", plot_params(sd), f"{sd.metric} against each hyperparameter (log axes for log-scaled ones); colour "
        "is the trial number" + ("." if several else ", the star the best trial."))
    fig, how = plot_importance(sd) if not several else (None, "Optuna's importance takes one objective")
    add("importance", fig, f"How much of {sd.metric}'s variation each hyperparameter explains ({how}, Optuna).",
        "With few trials these are rough: read them as a ranking.")
    imp_note = "" if fig is not None else f"Parameter importance: not computed ({how})."
    add("parallel", plot_parallel(sd), "Parallel coordinates: each line is a complete trial, through its "
        "hyperparameters (over their search ranges) to its value.")
    tables = [(f"Top {min(len(sd.complete), 10)} trials", top_table(sd),
               "Every metric the trial recorded; times per phase of the trial."
               + (" " + imp_note if imp_note else ""))]
    if several:
        tables[0] = ("Pareto set", pareto_table(sd), "The feasible complete trials no other feasible trial beats "
                     "in every objective, by the first objective." + (" " + imp_note if imp_note else ""))
    ft = failure_table(sd)
    if ft is not None:
        tables.append(("Failures", ft, "Failed trials and why; interrupted trials run again when the study resumes."))
    if any(v > 0 for k, v in sd.phase_totals().items() if k != "other"):  # an objective that times its phases
        tables.append(("Time split", time_table(sd), "Where the trials' time went (load: model and data set-up)."))
    title = sd.name if len(rep.studies) == 1 else f"Study {sd.name}"
    shown = facts(sd) if not several else front_facts(sd) + [
        ("objective", sd.objective) if k == "objective" else (k, v) for k, v in facts(sd) if not k.startswith("best ")]
    return Section(title, [(k, v) for k, v in shown], figs, tables, sd.phase_totals())


def _front_figures(sd: StudyData, add) -> None:
    """The front and the hypervolume of a study of several objectives (before its other figures)."""
    base = " The black diamond is the base model." if sd.base_values and None not in sd.base_values else ""
    pairs = "" if len(sd.objectives) == 2 else " One panel per pair of objectives; the Pareto set is of all of them."
    add("front", plot_front(sd), "Every complete trial's objectives: filled markers meet the constraints, hollow "
        "ones do not; the Pareto set in red with its trial numbers" + (", the front a step line and the region it "
                                                                       "dominates shaded." if not pairs else ".")
        + pairs + base, f"{len(sd.failed)} failed trial(s) have no values and are not drawn." if sd.failed else "")
    add("hypervolume", plot_hypervolume(sd), "The hypervolume of the feasible trials' Pareto set so far (against "
        "the final reference point, see the facts above), against the trial number and the compute spent.",
        "Compute is the trials' own time summed (what a cluster bills), not the wall clock.")


def write_report(studies, out: Path | str) -> Path:
    """Write ``report.html`` (self-contained), ``report.md`` and the figures as PNG into
    ``out``; returns the HTML file's path. ``studies``: one study or several."""
    if isinstance(studies, StudyData) or hasattr(studies, "records"):  # one study, not a list of them
        studies = [studies]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = build_report(studies)
    try:
        pngs: dict[str, bytes] = {}
        for name, fig in rep.figures.items():
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI)
            pngs[name] = buf.getvalue()
            (out / name).write_bytes(pngs[name])
        (out / "report.html").write_text(render_html(rep.title, rep.sections, pngs))
        (out / "report.md").write_text(render_markdown(rep.title, rep.sections))
    finally:
        rep.close()
    return out / "report.html"


__all__ = ["Report", "StudyData", "Trial", "build_report", "metric_name", "plot_comparison", "plot_curves",
           "plot_front", "plot_history", "plot_hypervolume", "plot_importance", "plot_metrics", "plot_parallel",
           "plot_params", "spans_decades",
           "write_report"]
