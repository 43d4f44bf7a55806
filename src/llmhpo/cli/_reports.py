"""Commands that write reports and figures: report, figures."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmhpo.cli._app import fail, say
from llmhpo.errors import ConfigError, LlmhpoError


def report(
    studies: list[str] = typer.Argument(..., metavar="STUDY",
                                        help="Study TOML files, storage URLs or sqlite .db files; a storage holding "
                                             "several studies brings them all (or those --study names)."),
    names: Optional[list[str]] = typer.Option(None, "--study", metavar="NAME",
                                              help="Only the studies of this name (repeatable)."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for report.html, report.md and the figures."),
):
    """An HTML report of one or several studies (self-contained: open report.html from the
    folder or send it), the figures as PNG beside it, and report.md.

    Per study: the objective and best so far against trials and wall-clock time (with the
    base model's score), the other metrics, loss curves, each hyperparameter against the
    score, parameter importances, parallel coordinates, the top trials, the failures and
    where the time went. Several studies are first compared on the same axes."""
    from llmhpo.report import write_report

    try:
        opened = _open_studies(studies, names or [])
        path = write_report(opened, out)
    except LlmhpoError as e:
        fail(e)
    say(f"report of {len(opened)} stud{'y' if len(opened) == 1 else 'ies'} written to {path} "
        f"(figures and report.md beside it)")


def _open_studies(refs: list[str], names: list[str]) -> list:
    """The studies the ``report`` arguments name: a TOML file gives its study; a storage
    gives all its studies, or only those named with --study."""
    from llmhpo.config import load_config
    from llmhpo.study import Study

    out, found = [], set()
    for ref in refs:
        if ref.endswith(".toml"):
            cfg = load_config(ref)
            url, wanted = cfg.study.storage, [cfg.study.name]
        else:
            if "://" not in ref and not Path(ref).exists():
                raise ConfigError(f"'{ref}' is neither a study TOML file, a storage URL nor an existing .db file")
            url = ref if "://" in ref else f"sqlite:///{Path(ref).resolve()}"
            db = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
            if db is not None and (not db.is_file() or db.stat().st_size == 0):  # opening would create it
                raise ConfigError(f"no study in {db}: the file does not exist or is empty; run "
                                  "`llmhpo run STUDY.toml` first, or check the path")
            try:
                wanted = Study.names(url)
            except LlmhpoError:
                raise
            except Exception as e:
                raise ConfigError(f"cannot read the studies in {ref}: {e}") from e
            if names:
                wanted = [n for n in wanted if n in names]
        for n in wanted:
            found.add(n)
            out.append(Study.load(url, n))
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"no study named {', '.join(missing)} in {', '.join(refs)}")
    if not out:
        raise ConfigError(f"no study in {', '.join(refs)}; run `llmhpo run STUDY.toml` first")
    return out


def figures(
    out: Path = typer.Option(Path("figures"), "--out", help="Folder for the PNG files."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stochastic optimisers (random, ILS, SA)."),
):
    """The algorithm gallery: each optimiser family's first evaluations on Himmelblau's
    function (grid vs random, ILS and SA paths, SOO / DIRECT / FDA partitions) and BO's
    Gaussian process on a 1-D function, drawn by llmhpo's own optimisers."""
    from llmhpo.lab.figures import write_gallery

    try:
        paths = write_gallery(out, seed=seed)
    except LlmhpoError as e:
        fail(e)
    for p in paths:
        say(str(p))
