"""The ``finetune`` objective kind: its [model], [data], [train] and [eval] tables, the
report's search space and direction, the checks before the first trial, and the worker's
objective (one per process, so the base model and task index load once)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

from llmhpo.errors import ConfigError, LlmhpoError, SetupProblems
from llmhpo.objectives import ObjectiveKind, ParseContext
from llmhpo.objectives.finetune.config import FinetuneConfig
from llmhpo.objectives.finetune.presets import preset

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

    def preset(self, spec, name: str):
        return preset(name)

    def check_space(self, spec: FinetuneConfig, space) -> None:
        spec.check(space)

    def preflight(self, spec: FinetuneConfig, space, devices=(), fidelity=None, remote=False) -> list[str]:
        """The model, data, tasks (and the objective metric) and GPUs can be had; raises
        SetupProblems naming every one that cannot (a lone problem as its own error). Converts a GGUF model and writes the
        builtin tasks once, here, rather than in every worker. remote: quantisation's and
        attention's GPU and packages are the Ray workers' to check."""
        fc = spec.resolved()
        lines, errors = [], []
        for check in (functools.partial(_check_runtime, remote=remote), _check_model, _check_data, _check_tasks):
            try:
                lines += check(fc)
            except LlmhpoError as e:
                errors.append(e)
        device_lines, device_problems = check_devices(devices)
        lines += device_lines
        if len(errors) == 1 and not device_problems:
            raise errors[0]  # as it came: a ConfigError stays one
        if errors or device_problems:
            raise SetupProblems([(str(e).splitlines() or [type(e).__name__])[0] for e in errors] + device_problems)
        return lines

    def scores_base(self, spec: FinetuneConfig) -> bool:
        return spec.eval.base

    def fidelity_resources(self, spec) -> tuple[str, ...]:
        return ("max_steps", "epochs")

    def integer_resource(self, spec, resource: str) -> bool:
        return resource != "epochs"  # a rung may end part-way through an epoch

    def resource_params(self, spec, resource: str) -> tuple[str, ...]:
        # either resource fixes the run's length: max_steps (0 for epochs) and epochs
        return ("max_steps", "epochs")

    def factory(self, spec: FinetuneConfig):
        return functools.partial(objective_for, spec)

    def describe(self, spec: FinetuneConfig) -> str:
        return f"finetune {spec.model.name}, {spec.eval.objective}"

    def export(self, spec: FinetuneConfig, record, out: Path, merge: bool = False) -> Path:
        from llmhpo.objectives.finetune.export import export_best

        return export_best(spec.resolved(), record, out, merge)


# ---------------------------------------------------------------- the checks of preflight
def _check_model(fc: FinetuneConfig) -> list[str]:
    from llmhpo.objectives.finetune import model as model_lib

    where, gguf = model_lib.resolve(fc.model)
    if not Path(where).is_dir():  # a hub id: its config must be reachable (cache or network)
        where = model_lib.check_hub_model(fc.model, where, gguf)
    return [f"model: {fc.model.name} -> {where}"]


def _check_runtime(fc: FinetuneConfig, remote: bool = False) -> list[str]:
    """What quantisation and the attention kernel need (a GPU, their package); remote: left
    to the Ray workers."""
    import torch

    from llmhpo.objectives.finetune.model import check_runtime

    if remote:
        return [f"quantization {fc.model.quantization}, attention {fc.model.attn_implementation}: "
                "checked by the Ray workers at their set-up"]
    return check_runtime(fc.model, torch.cuda.is_available())


def _check_data(fc: FinetuneConfig) -> list[str]:
    from llmhpo.objectives.finetune.data import load_records, split

    train, val = split(load_records(fc.data), fc.data)
    return [f"data: {fc.data.dataset}: {len(train)} training and {len(val)} held-out examples"]


def _check_tasks(fc: FinetuneConfig) -> list[str]:
    from llmhpo.objectives.finetune.evaluate import check_tasks, task_manager

    found = check_tasks(task_manager(fc.eval), fc.eval)  # data loads, the objective metric is reported
    limit = "all" if fc.eval.limit is None else fc.eval.limit
    return [f"tasks: {', '.join(fc.eval.tasks)} (objective {fc.eval.objective}, limit {limit})",
            f"metrics: {found}"]


def check_devices(devices: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """([runner] devices as found, one problem per device this machine does not have)."""
    import torch

    if not devices:
        return [f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}"], []
    n = torch.cuda.device_count()
    if n == 0:
        return [], [f"[runner] devices lists {'GPU ' * d.isdigit()}{d} but this machine has no CUDA GPU "
                    "(torch sees none); remove devices to run on the CPU" for d in devices]
    problems = [f"[runner] devices lists GPU {d} but this machine has {n} CUDA GPU(s), ids 0..{n - 1}; "
                f"use ids in 0..{n - 1} or remove devices" for d in devices if d.isdigit() and int(d) >= n]
    uuids = [d for d in devices if not d.isdigit()]
    known = _gpu_uuids() if uuids else None
    if known is not None:  # without nvidia-smi, CUDA itself judges the UUIDs in the worker
        problems += [f"[runner] devices lists {d} but `nvidia-smi -L` does not show it on this machine "
                     f"(it shows {', '.join(known) or 'none'}); use one of those or a GPU id 0..{n - 1}"
                     for d in uuids if not any(k.startswith(d) for k in known)]
    return [f"devices: GPUs {', '.join(devices)}"], problems


def _gpu_uuids() -> list[str] | None:
    """The GPU and MIG UUIDs `nvidia-smi -L` lists, or None when it cannot say."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return re.findall(r"UUID:\s*((?:GPU|MIG)-[^)\s]+)", out)
