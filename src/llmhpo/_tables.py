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
        shown = str(v).lower() if isinstance(v, bool) else repr(v)  # as the TOML file has it: true, not True
        raise ConfigError(f"[{section}] {key} = {shown} must be {names}")
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
    if storage.startswith("journal://") and not storage.startswith("journal:///"):
        storage = "journal:///" + storage[len("journal://"):]  # journal://study.log: relative, as three slashes
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


def runner_table(rn: Mapping[str, Any]) -> tuple:
    """The [runner] table checked: RunnerConfig's fields in order (workers, executor, devices,
    max_repeated_failures, max_retries, trial_timeout, address, gpus_per_trial, cpus_per_trial)."""
    no_unknown("runner", rn, {"workers", "executor", "devices", "max_repeated_failures", "max_retries",
                               "trial_timeout", "address", "gpus_per_trial", "cpus_per_trial"})
    executor = expect("runner", rn, "executor", (str,), "auto")
    if executor not in ("auto", "inline", "process", "ray"):
        raise ConfigError(f"[runner] executor = {executor!r} must be \"auto\", \"inline\", \"process\" or \"ray\"")
    devices = tuple(device(d) for d in expect("runner", rn, "devices", (list,), []))
    if devices and executor == "ray":
        raise ConfigError("[runner] devices is for the process executor; with executor = \"ray\" set "
                          "gpus_per_trial and Ray places each trial on a free GPU")
    gpus = float(expect("runner", rn, "gpus_per_trial", (int, float), 0.0))
    if gpus < 0:
        raise ConfigError(f"[runner] gpus_per_trial = {gpus:g} must be >= 0")
    if gpus and executor != "ray" and not devices:
        raise ConfigError("[runner] gpus_per_trial with the process executor groups [runner] devices; "
                          "list them (devices = [0, 1]) or set executor = \"ray\"")
    if executor == "ray" and gpus > 1 and gpus != int(gpus):
        raise ConfigError(f"[runner] gpus_per_trial = {gpus:g} must be a whole number of GPUs above 1 "
                          "(or a fraction to share one)")
    groups = device_groups(devices, gpus) if executor != "ray" else []
    workers = expect("runner", rn, "workers", (int, str), len(groups) or (0 if executor == "ray" else 1))
    if isinstance(workers, str):
        if workers != "auto" or not (executor == "ray" or devices):
            raise ConfigError(f"[runner] workers = {workers!r} must be a number"
                              + (" or \"auto\"" if executor == "ray" else
                                 " (\"auto\" is for executor = \"ray\"), or list [runner] devices"))
        workers = len(groups)
    if workers < 1 and not (executor == "ray" and workers == 0):
        raise ConfigError(f"[runner] workers = {workers} must be at least 1")
    if devices and workers != len(groups):
        per = "one worker per device" if len(groups) == len(devices) else f"{len(groups)} workers"
        raise ConfigError(f"[runner] workers = {workers} but {len(devices)} devices are listed at gpus_per_trial = "
                          f"{gpus or 1:g}; use {per} (or drop workers)")
    if executor == "inline" and workers > 1:
        raise ConfigError("[runner] executor = \"inline\" runs one trial at a time; set workers = 1 or executor = \"process\"")
    repeated = expect("runner", rn, "max_repeated_failures", (int,), 3)
    retries = expect("runner", rn, "max_retries", (int,), 1)
    for key, n, hint in (("max_repeated_failures", repeated, " (0: never stop on failures)"),
                         ("max_retries", retries, "")):
        if n < 0:
            raise ConfigError(f"[runner] {key} = {n} must be >= 0{hint}")
    timeout = None if rn.get("trial_timeout") is None else parse_duration(rn["trial_timeout"], "[runner] trial_timeout")
    if timeout is not None and executor == "inline":
        raise ConfigError("[runner] trial_timeout needs trials in worker processes; drop executor = \"inline\"")
    address = expect("runner", rn, "address", (str,), None)
    if address is not None and executor != "ray":
        raise ConfigError("[runner] address is the Ray cluster's address; it needs executor = \"ray\"")
    cpus = float(expect("runner", rn, "cpus_per_trial", (int, float), 1.0))
    if cpus < 0:
        raise ConfigError(f"[runner] cpus_per_trial = {cpus:g} must be >= 0")
    if "cpus_per_trial" in rn and executor != "ray":
        raise ConfigError("[runner] cpus_per_trial is a Ray resource request; it needs executor = \"ray\" "
                          "(the process executor splits the cores between its workers)")
    return workers, executor, devices, repeated, retries, timeout, address, gpus, cpus
