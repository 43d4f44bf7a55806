"""What every ``llmhpo`` command shares: the typer app, the consoles, the one-line error
exit and opening a study from what the user typed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from llmhpo.errors import ConfigError

# rich_markup_mode=None: help texts name TOML tables such as [budget], which rich markup would eat
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Hyperparameter optimisation for LLM fine-tuning (LoRA + lm-eval).")
console = Console()
err = Console(stderr=True)
_STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _STATE["debug"] = debug


def fail(e: BaseException) -> None:
    """Exit with status 2 after one line per problem on stderr (the traceback with --debug)."""
    if _STATE["debug"]:
        raise e
    # several problems found at once (before the first trial): one line each
    for msg in getattr(e, "problems", None) or [str(e).splitlines()[0] if str(e) else type(e).__name__]:
        err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def open_study(ref: str, name: Optional[str]):
    """The study a command's STUDY argument names: a TOML file, a storage URL or a .db file."""
    from llmhpo.config import load_config
    from llmhpo.study import Study

    if ref.endswith(".toml"):
        cfg = load_config(ref)
        return Study.load(cfg.study.storage, name or cfg.study.name)
    if "://" in ref:
        return Study.load(ref, name)
    if not Path(ref).exists():
        raise ConfigError(f"'{ref}' is neither a study TOML file, a storage URL nor an existing .db file")
    return Study.load(f"sqlite:///{ref}", name)


def say(text: str, style: str | None = None) -> None:
    """Print user text (params, reasons, paths) as is: never read as rich markup."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)
