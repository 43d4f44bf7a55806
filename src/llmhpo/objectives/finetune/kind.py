"""The ``finetune`` objective kind: its [model], [data], [train] and [eval] tables, the
report's search space and direction, the checks before the first trial, and the worker's
objective (one per process, so the base model and task index load once)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from llmhpo.errors import ConfigError, ObjectiveSetupError
from llmhpo.objectives import ObjectiveKind, ParseContext
from llmhpo.objectives.finetune.config import FinetuneConfig
from llmhpo.space import preset

# per process: the objective of each spec, so that a driver that scores the base model and
# then runs trials inline loads the model once
_OBJECTIVES: dict = {}


def objective_for(spec: FinetuneConfig):
    """This process's objective for ``spec`` (built on first use)."""
    from llmhpo.objectives.finetune import FinetuneObjective

    if spec not in _OBJECTIVES:
        _OBJECTIVES[spec] = FinetuneObjective(spec.resolved())
    return _OBJECTIVES[spec]


class FinetuneKind(ObjectiveKind):
    name = "finetune"
    tables = ("model", "data", "train", "eval")
    default_direction = "maximize"  # lm-eval scores: accuracy and the like
    isolate = True  # out-of-memory kills and CUDA crashes end the worker, not the study

    def reseed(self, spec, params, seed):
        """Another training seed ([train] seed is a knob): LoRA init, dropout, batch order."""
        return {**params, "seed": int(seed)}

    def parse(self, objective, tables, ctx: ParseContext) -> FinetuneConfig:
        if objective:
            raise ConfigError(f"[objective] has an unknown key '{next(iter(objective))}' for type \"finetune\"; "
                              "put settings in [model], [data], [train] or [eval]")
        return FinetuneConfig.from_sections(tables, ctx.study_name, ctx.base_dir)

    def default_space(self, spec):
        return preset("paper")

    def check_space(self, spec: FinetuneConfig, space) -> None:
        spec.check(space)

    def preflight(self, spec: FinetuneConfig, space, devices=(), fidelity=None) -> list[str]:
        """The model, data, tasks (and the objective metric) and GPUs can be had. Converts a
        GGUF model and writes the builtin tasks once, here, rather than in every worker."""
        from llmhpo.objectives.finetune import model as model_lib
        from llmhpo.objectives.finetune.data import load_records, split
        from llmhpo.objectives.finetune.evaluate import check_tasks, task_manager

        fc = spec.resolved()
        lines = []
        where, gguf = model_lib.resolve(fc.model)
        if not Path(where).is_dir():  # a hub id: its config must be reachable (cache or network)
            try:
                from transformers import AutoConfig

                AutoConfig.from_pretrained(where, revision=fc.model.revision, **({"gguf_file": gguf} if gguf else {}))
            except Exception as e:
                offline = os.environ.get("HF_HUB_OFFLINE") == "1"
                hint = ("no network (HF_HUB_OFFLINE=1): set [model] name to a local folder or GGUF file"
                        if offline else f"check the id, your network and access to gated models ({type(e).__name__})")
                raise ObjectiveSetupError(f"cannot load model {fc.model.name!r}: {hint}") from e
        lines.append(f"model: {fc.model.name} -> {where}")
        train, val = split(load_records(fc.data), fc.data)
        lines.append(f"data: {fc.data.dataset}: {len(train)} training and {len(val)} held-out examples")
        tm = task_manager(fc.eval)
        found = check_tasks(tm, fc.eval)  # data loads, the objective metric is reported
        limit = "all" if fc.eval.limit is None else fc.eval.limit
        lines.append(f"tasks: {', '.join(fc.eval.tasks)} (objective {fc.eval.objective}, limit {limit})")
        lines.append(f"metrics: {found}")
        import torch

        if devices:
            n = torch.cuda.device_count()
            for d in devices:
                if not d.isdigit() or int(d) >= n:
                    raise ObjectiveSetupError(f"[runner] devices lists GPU {d!r} but this machine has {n} GPU(s); "
                                              f"use ids 0..{max(n - 1, 0)} or remove devices")
            lines.append(f"devices: GPUs {', '.join(devices)}")
        else:
            lines.append(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}")
        return lines

    def scores_base(self, spec: FinetuneConfig) -> bool:
        return spec.eval.base

    def fidelity_resources(self, spec) -> tuple[str, ...]:
        return ("max_steps", "epochs")

    def factory(self, spec: FinetuneConfig):
        return functools.partial(objective_for, spec)

    def describe(self, spec: FinetuneConfig) -> str:
        return f"finetune {spec.model.name}, {spec.eval.objective}"

    def export(self, spec: FinetuneConfig, record, out: Path, merge: bool = False) -> Path:
        from llmhpo.objectives.finetune.export import export_best

        return export_best(spec.resolved(), record, out, merge)
