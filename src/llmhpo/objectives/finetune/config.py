"""The [model], [data], [train] and [eval] tables of a fine-tuning study, validated.

Searchable parameters map by name: learning_rate, lora_rank, lora_alpha, lora_dropout,
weight_decay, and any [train] knob (warmup_ratio, batch_size, grad_accum, max_steps,
epochs, scheduler, max_seq_len, ...). A knob fixed in [train] and also in [space] is searched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

from llmhpo.errors import ConfigError, did_you_mean

DEFAULT_MODEL = "builtin:smollm2-135m-instruct"
DEFAULT_DATA = "builtin:add"


@dataclass(frozen=True)
class ModelConfig:
    #: a Hugging Face id, a local folder, a .gguf file, or builtin:smollm2-135m-instruct (offline)
    name: str = DEFAULT_MODEL
    #: the GGUF file's name inside ``name`` when ``name`` is a hub repo or a folder of GGUF files
    gguf_file: str | None = None
    dtype: str = "auto"  # auto: bf16 on a GPU that supports it, fp32 on CPU
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    reload_each_trial: bool = False  # True only to measure what caching saves
    revision: str | None = None


@dataclass(frozen=True)
class DataConfig:
    #: builtin:<skill>[+<skill>...], a hub dataset id (e.g. tatsu-lab/alpaca), or a local .json/.jsonl file
    dataset: str = DEFAULT_DATA
    split: str = "train"
    max_examples: int | None = 2000
    val_examples: int = 64  # held out for the validation loss
    template: str = "alpaca"  # alpaca | chat (the tokenizer's chat template)
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 2e-4
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    weight_decay: float = 0.01
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 20  # optimiser steps; 0 = use epochs
    epochs: float = 1.0
    warmup_ratio: float = 0.0
    scheduler: str = "constant"  # any transformers scheduler name: linear, cosine, constant, ...
    max_seq_len: int = 64
    max_grad_norm: float = 1.0
    seed: int = 0
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    save_adapters: bool = True
    output_dir: str = "llmhpo-runs"
    packing: bool = False  # each micro-batch as one padding-free row (position_ids restart per example)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, slower

    def with_params(self, params: Mapping[str, Any]) -> "TrainConfig":
        """One trial's settings: these values with the searched ``params`` in their place, each
        cast once to its knob's type (an integer knob searched as a float is truncated).
        Params that are no training knob are left out."""
        types = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        return replace(self, **{k: types[k](v) for k, v in params.items() if k in types})


@dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...] = ("llmhpo_add", "llmhpo_general")
    objective: str = "llmhpo_add/acc"  # task/metric
    #: per task: a number of examples, a fraction of the task (0 < limit < 1), or None for all
    limit: int | float | None = None
    batch_size: int = 8
    num_fewshot: int | None = None
    include_path: tuple[str, ...] = ()  # folders of the user's own lm-eval YAML tasks
    val_loss: bool = True
    #: with [fidelity]: the limit below the top rung (cheaper scoring while configurations are
    #: sorted out); None: the same as limit
    low_rung_limit: int | float | None = None
    n_questions: int = 200  # size of each builtin question set
    #: score the base model (no adapter) once per study, as the reference for every trial
    base: bool = True


@dataclass(frozen=True)
class FinetuneConfig:
    kind: ClassVar[str] = "finetune"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    study_name: str = "study"
    #: relative paths (model, dataset, include_path, output_dir) are relative to this folder
    base_dir: str = field(default=".", compare=False)

    @classmethod
    def from_sections(cls, sections: Mapping[str, Mapping[str, Any]], study_name: str = "study",
                      base_dir: str | Path = ".") -> "FinetuneConfig":
        """Build from the [model], [data], [train] and [eval] tables; ConfigError on a bad key."""
        cfg = cls(
            _build("model", ModelConfig, sections.get("model", {})),
            _build("data", DataConfig, sections.get("data", {})),
            _build("train", TrainConfig, sections.get("train", {})),
            _build("eval", EvalConfig, sections.get("eval", {})),
            study_name,
            str(base_dir),
        )
        cfg.check()
        return cfg

    def check(self, space=None) -> None:
        if space is not None:
            for name in space.names:
                if name not in SEARCHABLE:
                    raise ConfigError(f"[space] {name} is not a training knob; searchable names are: "
                                      f"{', '.join(sorted(SEARCHABLE))}")
        if self.data.template not in ("alpaca", "chat"):
            raise ConfigError(f"[data] template = {self.data.template!r} must be \"alpaca\" or \"chat\"")
        if self.model.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"[model] dtype = {self.model.dtype!r} must be auto, float32, bfloat16 or float16")
        if "/" not in self.eval.objective:
            raise ConfigError(f"[eval] objective = {self.eval.objective!r} must be task/metric, e.g. \"hellaswag/acc_norm\"")
        task = self.eval.objective.split("/")[0]
        if task not in self.eval.tasks:
            raise ConfigError(f"[eval] objective task '{task}' is not in [eval] tasks {list(self.eval.tasks)}; add it")
        for key in ("limit", "low_rung_limit"):
            limit = getattr(self.eval, key)
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                      or (isinstance(limit, int) and limit < 1)
                                      or (isinstance(limit, float) and not 0 < limit < 1)):
                raise ConfigError(f"[eval] {key} = {limit!r} must be a number of examples (an integer >= 1), a "
                                  "fraction of each task (0 < limit < 1), or left out for the whole task")
        if self.data.val_examples < 0 or (self.data.max_examples is not None and self.data.max_examples < 1):
            raise ConfigError("[data] val_examples must be >= 0 and max_examples >= 1")
        for key in ("batch_size", "grad_accum", "max_seq_len"):
            if getattr(self.train, key) < 1:
                raise ConfigError(f"[train] {key} = {getattr(self.train, key)} must be at least 1")
        if self.train.max_steps < 0 or (self.train.max_steps == 0 and self.train.epochs <= 0):
            raise ConfigError("[train] needs max_steps > 0, or max_steps = 0 and epochs > 0")

    def resolved(self) -> "FinetuneConfig":
        """A copy whose local paths are absolute (what workers, preflight and export use)."""
        base = Path(self.base_dir)

        def path(p: str) -> str:
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else (base / q).resolve())

        def local(name: str, suffixes: tuple[str, ...]) -> bool:
            # a hub id such as "org/name" stays one unless a file or folder of that name is here
            return (name.startswith((".", "/", "~")) or Path(name).suffix in suffixes
                    or (":" not in name and (base / name).exists()))

        model, data = self.model, self.data
        if not model.name.startswith("builtin:") and local(model.name, (".gguf",)):
            model = replace(model, name=path(model.name))
        if not data.dataset.startswith("builtin:") and local(data.dataset, (".json", ".jsonl")):
            data = replace(data, dataset=path(data.dataset))
        return replace(self, model=model, data=data,
                       train=replace(self.train, output_dir=path(self.train.output_dir)),
                       eval=replace(self.eval, include_path=tuple(path(p) for p in self.eval.include_path)))

    def to_tables(self) -> dict[str, dict[str, Any]]:
        """The four tables as written (relative paths stay relative: a moved study resumes)."""
        d = asdict(self)
        for section, keys in ADDED_KEYS.items():  # at their defaults, left out: stored studies keep their hash
            for key in keys:
                if d[section][key] == getattr(_DEFAULTS[section], key):
                    del d[section][key]
        return {"objective": {}, **{k: d[k] for k in ("model", "data", "train", "eval")}}

#: keys added after studies were first stored: left out of the stored tables while at their
#: defaults, so that a study stored before a key existed keeps its config hash and resumes
ADDED_KEYS: dict[str, tuple[str, ...]] = {"model": (), "data": (), "train": ("packing", "gradient_checkpointing"),
                                          "eval": ("base",)}
_DEFAULTS = {"model": ModelConfig(), "data": DataConfig(), "train": TrainConfig(), "eval": EvalConfig()}

SEARCHABLE = {f.name for f in fields(TrainConfig)} - {"save_adapters", "output_dir", "threads", "packing",
                                                     "gradient_checkpointing"}


def _build(section: str, cls, table: Mapping[str, Any]):
    allowed = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"[{section}] has an unknown key '{key}'{did_you_mean(key, allowed)}; "
                              f"allowed keys: {', '.join(allowed)}")
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[{section}] {key} = {value!r} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"[{section}] {key} = {value!r} must be true or false")
        elif isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"[{section}] {key} = {value!r} must be an integer")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"[{section}] {key} = {value!r} must be a number")
            value = float(value)
        elif key in ("limit", "low_rung_limit"):
            value = None if value == "all" else value  # checked in FinetuneConfig.check
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"[{section}] {key} = {value!r} must be a string")
        kwargs[key] = value
    return cls(**kwargs)
