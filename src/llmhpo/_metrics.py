"""How a trial's stored attributes read: its metrics split into scalars, curves and texts,
its timings, and its adapter's folder. The report and the tracking tools both read trials
this way, so that a metric is a curve, or a timing a number, in both or in neither.

A trial here is a ``llmhpo.study.TrialRecord`` (anything with ``attrs``)."""

from __future__ import annotations

import math
from typing import Any

#: metrics that are not measurements of the trial (kept out of the scalar series)
NOT_METRICS = {"traceback"}


def split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, list[tuple[float, float]]],
                                                     dict[str, str]]:
    """A trial's ``metrics`` attribute -> (scalars, curves, texts).

    scalars: finite numbers; curves: ``name -> [(step, value), ...]`` from a list of numbers
    (steps 1, 2, ...) or of ``[step, value]`` pairs, the ``_curve`` suffix dropped
    (``train_loss_curve`` -> ``train_loss``); texts: strings such as the device or the adapter
    folder. Booleans, tracebacks and anything else are left out.
    """
    scalars: dict[str, float] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    texts: dict[str, str] = {}
    for k, v in (metrics or {}).items():
        if k in NOT_METRICS or isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            if math.isfinite(v):
                scalars[k] = float(v)
        elif isinstance(v, str):
            texts[k] = v
        elif isinstance(v, (list, tuple)) and v:
            pts = _curve_points(v)
            if pts:
                curves[k[: -len("_curve")] if k.endswith("_curve") else k] = pts
    return scalars, curves, texts


def _curve_points(v: list) -> list[tuple[float, float]]:
    out = []
    for i, p in enumerate(v):
        if isinstance(p, (int, float)) and not isinstance(p, bool):
            step, y = i + 1, p
        elif isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(q, (int, float)) for q in p):
            step, y = p
        else:
            return []  # not a curve (a list of names, say)
        if math.isfinite(y):
            out.append((float(step), float(y)))
    return out


def numbers(d: dict[str, Any] | None) -> dict[str, float]:
    """The numeric entries of ``d`` as floats (booleans and anything else left out): a
    trial's ``timings`` (seconds per phase), the base model's metrics."""
    return {k: float(v) for k, v in (d or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def timings(record) -> dict[str, float]:
    """The trial's seconds per phase."""
    return numbers(record.attrs.get("timings"))


def adapter_dir(record) -> str | None:
    """The folder of the trial's saved adapter, if it has one."""
    m = record.attrs.get("metrics") or {}
    return m.get("adapter_dir") or record.attrs.get("adapter_dir") or record.attrs.get("adapter")
