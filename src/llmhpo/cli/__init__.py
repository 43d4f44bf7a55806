"""The ``llmhpo`` command line: run, status, best, report, bench, check, demo.

Errors llmhpo raises on purpose print one line and exit with status 2; ``--debug`` shows
the traceback. One module per group of commands: ``_running`` (run, check, demo),
``_reading`` (status, best), ``_reports`` (report, figures), ``_bench``; ``_app`` holds
what they share.
"""

from __future__ import annotations

import os
import sys

# lm-eval and datasets draw a tqdm bar per task and split; the study's own progress bar
# says what matters (set TQDM_DISABLE=0 to see them)
os.environ.setdefault("TQDM_DISABLE", "1")

import typer  # noqa: E402
from rich.markup import escape  # noqa: E402

from llmhpo.cli._app import app, err  # noqa: E402
from llmhpo.cli._bench import bench  # noqa: E402
from llmhpo.cli._reading import best, status  # noqa: E402
from llmhpo.cli._reports import figures, report  # noqa: E402
from llmhpo.cli._running import check, demo, run  # noqa: E402
from llmhpo.errors import LlmhpoError  # noqa: E402

__all__ = ["app", "main"]

# registered here, in the order `llmhpo --help` lists them
for _command in (run, status, best, report, figures, check, bench, demo):
    app.command()(_command)


def main() -> None:
    try:
        app()
    except typer.Exit:
        raise
    except LlmhpoError as e:  # pragma: no cover - commands catch their own
        err.print(f"error: {escape(str(e))}")
        sys.exit(2)
