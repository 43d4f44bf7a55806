"""Figures and a Markdown summary of a study: best-so-far curve, each parameter against
the objective, and the table of trials."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_report(study, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = study.config
    recs = [r for r in study.records() if not r.interrupted]
    done = [r for r in recs if r.state == "COMPLETE"]
    maximize = cfg.study.direction == "maximize"

    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs, ys, best, curve = [], [], None, []
    for r in recs:
        if r.value is not None:
            best = r.value if best is None else (max if maximize else min)(best, r.value)
            xs.append(r.number)
            ys.append(r.value)
        curve.append(best)
    ax.scatter(xs, ys, s=12, alpha=0.6, label="trial")
    ax.step([r.number for r in recs], curve, where="post", color="C3", label="best so far")
    fails = [r.number for r in recs if r.state == "FAIL"]
    if fails and ys:
        ax.scatter(fails, [min(ys)] * len(fails), marker="x", color="k", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.set_title(f"{cfg.study.name}: {cfg.optimizer}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=120)
    plt.close(fig)

    names = cfg.space.names
    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3), squeeze=False)
    for ax, n in zip(axes[0], names):
        v = cfg.space[n]
        xs = [r.params[n] for r in done]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            xs = [str(x) for x in xs]  # categoricals of mixed types: one column per choice
        ax.scatter(xs, [r.value for r in done], s=12)
        if getattr(v, "log", False):
            ax.set_xscale("log")
        ax.set_xlabel(n)
    axes[0][0].set_ylabel("objective")
    fig.tight_layout()
    fig.savefig(out / "params.png", dpi=120)
    plt.close(fig)

    lines = [f"# Study {cfg.study.name}", "",
             f"optimizer `{cfg.optimizer}`, objective `{cfg.kind.describe(cfg.objective)}`, {cfg.study.direction}, "
             f"{len(done)} complete, {sum(r.state == 'FAIL' for r in recs)} failed", ""]
    b = study.best()
    if b:
        lines += [f"best value **{b.value:.6g}** (trial {b.number}): "
                  + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b.params.items()), ""]
    lines += ["![history](history.png)", "", "![params](params.png)", "",
              "| trial | state | value | " + " | ".join(names) + " |",
              "|---|---|---:|" + "---:|" * len(names)]
    for r in recs:
        vals = [f"{r.params[n]:.4g}" if isinstance(r.params.get(n), float) else str(r.params.get(n, "")) for n in names]
        lines.append(f"| {r.number} | {r.state} | {'' if r.value is None else f'{r.value:.6g}'} | " + " | ".join(vals) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"
