"""JSON round-trip for optimiser state: numpy arrays and scalars survive, nothing is pickled."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def encode(obj: Any) -> Any:
    """Turn ``obj`` into plain JSON types; arrays become ``{"__ndarray__": ..., "dtype": ...}``."""
    if isinstance(obj, np.ndarray):
        # the shape too: an empty (0, d) array would come back as (0,)
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return {"__float__": repr(obj)}
    return obj


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            a = np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
            return a.reshape(obj["shape"]) if "shape" in obj else a
        if "__float__" in obj:
            return float(obj["__float__"])
        return {k: decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(encode(obj), sort_keys=True, allow_nan=False)


def loads(text: str) -> Any:
    return decode(json.loads(text))
