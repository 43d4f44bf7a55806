"""How a value reads in a line of output or a table cell: floats to 4 significant digits."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, digits: int = 4, none: str = "") -> str:
    """``v`` for people: a float as ``digits`` significant digits, None as ``none`` (an
    empty table cell by default), anything else as ``str`` gives it."""
    if v is None:
        return none
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)
