"""Reading the values of a study TOML's tables: typed keys, unknown keys, and the values
several tables share (durations, GPU ids, storage URLs). Every problem is a ConfigError
naming the table, the key and the fix; what the tables mean is ``llmhpo.config``'s."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from llmhpo.errors import ConfigError, did_you_mean


def expect(section: str, table: Mapping[str, Any], key: str, types: tuple, default: Any = None,
           required: bool = False) -> Any:
    """``table[key]`` when it has one of ``types`` (true/false is no number), else ``default``."""
    if key not in table:
        if required:
            raise ConfigError(f"[{section}] is missing the key '{key}'")
        return default
    v = table[key]
    if isinstance(v, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(v, types)
    if not ok:
        words = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true or false",
                 dict: "a table"}
        names = " or ".join(words.get(t, t.__name__) for t in types)
        raise ConfigError(f"[{section}] {key} = {v!r} must be {names}")
    return v


def no_unknown(section: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse a key the table does not have, naming the nearest allowed one (a typo)."""
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"[{section}] has an unknown key '{extra[0]}'{did_you_mean(extra[0], allowed)}; "
                          f"allowed keys: {', '.join(sorted(allowed))}")


# what CUDA_VISIBLE_DEVICES accepts: an index, a GPU or MIG UUID (or a unique prefix of one),
# or the older MIG-GPU-<uuid>/<gpu instance>/<compute instance>
_DEVICE = re.compile(r"^([0-9]+|GPU-[0-9a-fA-F][0-9a-fA-F-]*|MIG-[0-9a-fA-F][0-9a-fA-F-]*|MIG-GPU-[0-9a-fA-F-]+/\d+/\d+)$")


def device(d: Any) -> str:
    """One [runner] devices entry as CUDA_VISIBLE_DEVICES will get it."""
    if isinstance(d, int) and not isinstance(d, bool) and d >= 0:
        return str(d)
    if isinstance(d, str) and _DEVICE.match(d):
        return d
    raise ConfigError(f"[runner] devices has {d!r}, which CUDA_VISIBLE_DEVICES does not accept; give GPU indices "
                      "(0, 1, ...), GPU-<uuid> or MIG-<uuid> as `nvidia-smi -L` shows them")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$")


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a number or a string such as "90m", "2h", "30s"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[m.group(2)]
    else:
        raise ConfigError(f"{where} = {value!r} must be seconds or a duration such as \"90m\" or \"2h\"")
    if seconds <= 0:
        raise ConfigError(f"{where} = {value!r} must be positive")
    return seconds


def storage_url(storage: str, base_dir: Path) -> str:
    """An Optuna storage URL; a bare path or a relative sqlite path is relative to ``base_dir``."""
    if "://" not in storage:
        storage = f"sqlite:///{storage}"
    for prefix in ("sqlite:///", "journal:///"):  # as SQLAlchemy: three slashes relative, four absolute
        if storage.startswith(prefix) and not storage.startswith(prefix + "/") and storage != prefix + ":memory:":
            path = Path(storage[len(prefix):]).expanduser()
            storage = prefix + str(path if path.is_absolute() else (base_dir / path).resolve())
    return storage


def device_groups(devices: tuple[str, ...], gpus_per_trial: float) -> list[tuple[str, ...]]:
    """The GPUs of each process-executor worker: one device each (``gpus_per_trial`` 0 or 1),
    ``k`` devices each for an integer k > 1 (a rank group), or each device ``n`` times for
    ``gpus_per_trial`` = 1/n (n workers share a GPU; the workers alternate over the devices)."""
    g = float(gpus_per_trial)
    if g in (0.0, 1.0):
        return [(d,) for d in devices]
    if g > 1:
        if g != int(g):
            raise ConfigError(f"[runner] gpus_per_trial = {g:g} must be a whole number of GPUs above 1 "
                              "(or a fraction 1/n to share one)")
        k = int(g)
        if len(devices) % k:
            raise ConfigError(f"[runner] gpus_per_trial = {k} does not divide the {len(devices)} devices listed; "
                              f"list a multiple of {k} devices")
        return [tuple(devices[i:i + k]) for i in range(0, len(devices), k)]
    n = round(1 / g)
    if g <= 0 or abs(n * g - 1) > 1e-9:
        raise ConfigError(f"[runner] gpus_per_trial = {g:g} must be 1/n (0.5, 0.25, ...) to share a GPU "
                          "between n workers")
    return [(d,) for _ in range(n) for d in devices]
