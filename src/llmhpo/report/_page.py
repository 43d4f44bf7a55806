"""The report's tables, and the two documents that hold them with the figures: a
self-contained HTML page (figures inlined as base64 PNG, no script, no server) and a
Markdown file that links the PNGs beside it."""

from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass, field

from llmhpo._format import fmt
from llmhpo._version import __version__
from llmhpo.report._data import StudyData, Trial, is_bookkeeping, memory_columns

TOP = 10  # trials in the "top trials" table


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def compute(sd: StudyData) -> str:
    """The trials' own time summed: GPU- or CPU-hours, or a plain duration when short."""
    h = sd.compute_hours()
    return f"{h:.3g} {sd.accelerator}-hours" if h >= 0.1 else f"{duration(h * 3600)} of {sd.accelerator} time"


@dataclass
class Table:
    """A table both documents render: header, rows of cells (strings), and which columns
    are numbers (right-aligned)."""

    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    wrap: set[int] = field(default_factory=set)  # long text: wrapped in HTML
    compact: bool = False  # as wide as its cells, not the page

    def markdown(self) -> str:
        def cell(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(cell(h) for h in self.header) + " |",
                 "|" + "|".join("---:" if i in self.numeric else "---" for i in range(len(self.header))) + "|"]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        def cls(i: int) -> str:
            return ' class="num"' if i in self.numeric else ' class="wrap"' if i in self.wrap else ""

        head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(self.header))
        body = "".join("<tr>" + "".join(f"<td{cls(i)}>{html.escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                       for row in self.rows)
        table = '<table class="compact">' if self.compact else "<table>"
        return f'<div class="scroll">{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# ---------------------------------------------------------------------- tables
def summary_table(studies: list[StudyData]) -> Table:
    """One row per study: what it searched and what it found, and what it cost."""
    rows = []
    for sd in studies:
        c = sd.counts()
        b = sd.best()
        rows.append([sd.name, sd.optimizer, sd.objective, sd.direction, str(c["COMPLETE"]), str(c["FAIL"]),
                     str(c["PRUNED"] + c["WAITING"]), "" if b is None else f"{b.value:.4g} (trial {b.number})",
                     fmt(sd.base_score), compute(sd), duration(sd.wall_hours() * 3600)])
    return Table(["study", "optimizer", "objective", "direction", "complete", "failed", "pruned/waiting", "best",
                  "base model", "compute", "wall clock"], rows, numeric={4, 5, 6, 7, 8, 9, 10})


def facts(sd: StudyData) -> list[tuple[str, str]]:
    """The study's key facts, the answer to "did it help, and by how much?" first."""
    c = sd.counts()
    b = sd.best()
    out = []
    if b is not None:
        line = f"{b.value:.4g} (trial {b.number})"
        if sd.base_score is not None:
            gain = b.value - sd.base_score
            better = gain > 0 if sd.maximize else gain < 0
            line += (f": {gain:+.4g} over the base model's {sd.base_score:.4g} ("
                     f"{'better' if better else 'no better'})")
        out.append((f"best {sd.metric}", line))
        out.append(("best hyperparameters", ", ".join(f"{k} = {fmt(v)}" for k, v in b.params.items())))
        if b.adapter:
            out.append(("best adapter", b.adapter))
    else:
        out.append((f"best {sd.metric}", "no complete trial"))
    out.append(("objective", f"{sd.objective} ({sd.direction})"))
    out.append(("optimizer", sd.optimizer))
    if sd.warm_start:
        out.append(("warm start from", sd.warm_start))
    states = [f"{c['COMPLETE']} complete", f"{c['FAIL']} failed"]
    states += [f"{c[s]} {s.lower()}" for s in ("PRUNED", "WAITING", "RUNNING", "INTERRUPTED") if c[s]]
    out.append(("trials", ", ".join(states)))
    out.append(("compute", f"{compute(sd)} over {duration(sd.wall_hours() * 3600)} of wall-clock time"))
    memory = memory_fact(sd)
    if memory:
        out.append(("peak memory", memory))
    return out


def memory_fact(sd: StudyData) -> str | None:
    """The best trial's peak memory and the highest of any trial (GPU's where recorded)."""
    cols = memory_columns(sd.trials)
    key = next((k for k in ("peak_gpu_memory_mb", "peak_rss_mb", "peak_memory_mb") if k in cols), None)
    if key is None:
        return None
    what = {"peak_gpu_memory_mb": " on the GPU", "peak_rss_mb": " resident"}.get(key, "")
    top = max((t for t in sd.trials if key in t.scalars), key=lambda t: t.scalars[key])
    line = f"highest {top.scalars[key]:.0f} MiB{what} (trial {top.number})"
    b = sd.best()
    if b is not None and key in b.scalars:
        line = f"{b.scalars[key]:.0f} MiB{what} for the best trial; {line}"
    return line


def _memory_cells(t: Trial, cols: dict[str, str]) -> list[str]:
    return [f"{t.scalars[k]:.0f}" if k in t.scalars else "" for k in cols]


def top_table(sd: StudyData, n: int = TOP) -> Table:
    """The best trials with every hyperparameter, every scalar metric, tokens/s and timings."""
    trials = sd.ranked()[:n]
    params = list(sd.space.names)
    metrics = sorted({k for t in trials for k in t.scalars if k != sd.metric and not is_bookkeeping(k)},
                     key=lambda k: (0 if "/" in k else 1, k))
    speed = any("train_tokens_per_s" in t.scalars for t in trials)
    memory = memory_columns(trials)
    phases = ["load", "train", "evaluate"] if any(t.phases()["train"] or t.phases()["evaluate"] for t in trials) else []
    header = (["trial", sd.metric] + (["vs base"] if sd.base_score is not None else []) + params + metrics
              + ["tokens/s"] * speed + list(memory.values()) + [f"{p} time" for p in phases] + ["trial time"])
    rows = []
    for t in trials:
        ph = t.phases()
        row = [str(t.number), fmt(t.value)]
        if sd.base_score is not None:
            row.append(f"{t.value - sd.base_score:+.3g}")
        row += [fmt(t.params.get(p)) for p in params]
        row += [fmt(t.scalars.get(m)) for m in metrics]
        row += [f"{t.scalars['train_tokens_per_s']:.0f}" if "train_tokens_per_s" in t.scalars else ""] * speed
        row += _memory_cells(t, memory)
        row += [duration(ph[p]) for p in phases] + [duration(t.compute_s)]
        rows.append(row)
    return Table(header, rows, numeric=set(range(len(header))))


def failure_table(sd: StudyData) -> Table | None:
    """Failed trials with their whole reason (and interrupted ones, which rerun on resume)."""
    bad = [t for t in sd.trials if t.state in ("FAIL", "INTERRUPTED")]
    if not bad:
        return None
    params = list(sd.space.names)
    memory = memory_columns(bad)  # an out-of-memory failure records the peaks it reached
    rows = [[str(t.number), t.state.lower()] + [fmt(t.params.get(p)) for p in params]
            + [duration(t.compute_s)] + _memory_cells(t, memory) + [t.error or "(no reason recorded)"] for t in bad]
    n = len(params) + len(memory)
    return Table(["trial", "state"] + params + ["after"] + list(memory.values()) + ["reason"], rows,
                 numeric={0} | set(range(2, 3 + n)), wrap={3 + n})


def time_table(sd: StudyData) -> Table:
    """Where the trials' time went: loading, training, evaluating, the rest."""
    tot = sd.phase_totals()
    n = max(len([t for t in sd.trials if t.state != "RUNNING"]), 1)
    all_s = sum(tot.values()) or 1.0
    rows = [[phase, duration(s), f"{s / all_s:.0%}", duration(s / n)] for phase, s in tot.items()]
    rows.append(["all trials", duration(sum(tot.values())), "100%", duration(sum(tot.values()) / n)])
    return Table(["phase", "total", "share", "per trial"], rows, numeric={1, 2, 3}, compact=True)


# ---------------------------------------------------------------------- documents
@dataclass
class Section:
    """One study's part of the documents (or the comparison's)."""

    title: str
    facts: list[tuple[str, str]]
    figures: list[tuple[str, str, str]]  # (file name, caption, note under it)
    tables: list[tuple[str, Table, str]]  # (heading, table, note)
    time_split: dict[str, float] | None = None


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1280px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:8px 0 2px}h2{font-size:21px;margin:36px 0 8px;border-bottom:2px solid #dde1e7;
padding-bottom:4px}h3{font-size:16px;margin:22px 0 6px}
.sub{color:#5b6475;font-size:13px;margin-bottom:14px}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;border:1px solid #dde1e7;
border-radius:8px;padding:12px 16px;font-size:14px}.facts dt{color:#5b6475}.facts dd{margin:0;font-weight:500}
figure{margin:14px 0;background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:13px;color:#3a4252;margin-top:6px}.note{font-size:12.5px;color:#6b7385;margin:4px 0}
.scroll{overflow-x:auto;background:#fff;border:1px solid #dde1e7;border-radius:8px}
table{border-collapse:collapse;font-size:12.5px;width:100%}table.compact{width:auto;min-width:520px}
.scroll:has(table.compact){display:inline-block;max-width:100%}th,td{padding:5px 9px;border-bottom:1px solid #eceff3;
text-align:left;white-space:nowrap}th{background:#eef1f5;position:sticky;top:0}td.num,th.num{text-align:right;
font-variant-numeric:tabular-nums}td.wrap{white-space:pre-wrap;min-width:320px;font-family:ui-monospace,monospace;
font-size:12px}tbody tr:nth-child(2n){background:#fafbfc}
.bar{display:flex;height:16px;border-radius:4px;overflow:hidden;margin:8px 0 4px;max-width:720px}
.bar span{display:block;height:100%}.legend{font-size:12px;color:#3a4252}.legend i{display:inline-block;width:10px;
height:10px;margin:0 4px 0 12px;border-radius:2px}
nav{font-size:13px;margin:6px 0 0}nav a{margin-right:14px;color:#2a62b8;text-decoration:none}
"""
PHASE_COLORS = {"load": "#8e9aaf", "train": "#3b75af", "evaluate": "#e4a52e", "other": "#d5d9e0"}


def _anchor(title: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")


def render_html(title: str, sections: list[Section], pngs: dict[str, bytes]) -> str:
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
           f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head>",
           f"<body><main><h1>{html.escape(title)}</h1>",
           f"<div class=\"sub\">written by llmhpo {__version__} on {when}; every figure is also a PNG beside "
           "this file</div>"]
    if len(sections) > 1:
        out.append("<nav>" + "".join(f"<a href=\"#{_anchor(s.title)}\">{html.escape(s.title)}</a>" for s in sections)
                   + "</nav>")
    for s in sections:
        out.append(f"<h2 id=\"{_anchor(s.title)}\">{html.escape(s.title)}</h2>")
        if s.facts:
            out.append("<dl class=\"facts\">" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                                        for k, v in s.facts) + "</dl>")
        for name, caption, note in s.figures:
            data = base64.b64encode(pngs[name]).decode("ascii")
            out.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(caption)}\">"
                       f"<figcaption>{html.escape(caption)}</figcaption>"
                       + (f"<div class=\"note\">{html.escape(note)}</div>" if note else "") + "</figure>")
        for heading, table, note in s.tables:
            out.append(f"<h3>{html.escape(heading)}</h3>")
            if note:
                out.append(f"<div class=\"note\">{html.escape(note)}</div>")
            if heading.startswith("Time") and s.time_split:
                out.append(_bar(s.time_split))
            out.append(table.html())
    out.append("</main></body></html>")
    return "\n".join(out)


def _bar(split: dict[str, float]) -> str:
    total = sum(split.values()) or 1.0
    spans = "".join(f"<span style=\"width:{100 * v / total:.2f}%;background:{PHASE_COLORS[k]}\" title=\"{k}\"></span>"
                    for k, v in split.items() if v > 0)
    legend = "".join(f"<i style=\"background:{PHASE_COLORS[k]}\"></i>{k} {v / total:.0%}" for k, v in split.items())
    return f"<div class=\"bar\">{spans}</div><div class=\"legend\">{legend}</div>"


def render_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", f"Written by llmhpo {__version__}; `report.html` beside this file is the same "
             "report in one page.", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        lines += [f"- **{k}**: {v}" for k, v in s.facts]
        lines.append("")
        for name, caption, note in s.figures:
            lines += [f"![{caption}]({name})", "", f"*{caption}*" + (f" {note}" if note else ""), ""]
        for heading, table, note in s.tables:
            lines += [f"### {heading}", ""] + ([note, ""] if note else []) + [table.markdown(), ""]
    return "\n".join(lines) + "\n"
