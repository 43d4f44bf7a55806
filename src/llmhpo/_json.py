"""Values made JSON-safe, two ways.

``encode``/``decode`` round-trip optimiser state exactly (numpy arrays and non-finite floats
are tagged, nothing is pickled). ``jsonable`` is one-way and lossy, for what people and
other tools read (a trial's metrics and timings, ``--json`` output): strict JSON, every
value readable, nothing that makes a run crash.
"""

from __future__ import annotations

import math
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


def jsonable(v: Any) -> Any:
    """``v`` as plain, strict JSON types: non-finite floats and unknown objects as their text,
    numpy and torch scalars and arrays as numbers and lists, sets as sorted lists."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return [jsonable(x) for x in sorted(v, key=str)]
    if hasattr(v, "tolist"):  # numpy and torch scalars and arrays
        return jsonable(v.tolist())
    return str(v)  # anything else, readable rather than a crash of the run
