"""Padded batches versus padding-free packing: seconds per optimiser step of the demo's
training (SmolLM2-135M, builtin:add, max_seq_len 64, batch_size 8) on this machine's CPU,
the two modes alternating so that a change of load hits both. Both wall and CPU seconds
(the process's own, less moved by other programs on a shared machine) are reported.
usage: python benchmarks/packing_cpu.py [STEPS_PER_ROUND] [ROUNDS] [LAYERS]
(LAYERS: keep only the first decoder layers, for a quick ratio; 0 = all 30)"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from peft import get_peft_model  # noqa: E402

from llmhpo.objectives.finetune import model as model_lib  # noqa: E402
from llmhpo.objectives.finetune import train as train_lib  # noqa: E402
from llmhpo.objectives.finetune.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from llmhpo.objectives.finetune.data import load_records, split, tokenize  # noqa: E402


def main(steps: int, rounds: int, layers: int) -> None:
    model, tok = model_lib.load(ModelConfig(), "cpu")
    if layers:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
    for p in model.parameters():
        p.requires_grad_(False)
    data_cfg = DataConfig()
    data = tokenize(split(load_records(data_cfg), data_cfg)[0], tok, "alpaca", 64)
    settings = TrainConfig(max_steps=steps, batch_size=8, max_seq_len=64)
    wall, cpu = {False: [], True: []}, {False: [], True: []}
    for r in range(rounds):
        for packing in (False, True):
            s = replace(settings, packing=packing, seed=r)
            torch.manual_seed(0)
            pm = get_peft_model(model, train_lib.lora_config(s, ModelConfig().target_modules))
            c0 = time.process_time()
            stats, _ = train_lib.train(pm, data, s, tok.pad_token_id, "cpu")
            cpu[packing].append((time.process_time() - c0) / steps)
            pm.unload()
            wall[packing].append(stats.seconds / steps)
            print(f"round {r} packing={packing}: {wall[packing][-1]:.3f} s/step wall, {cpu[packing][-1]:.3f} cpu",
                  file=sys.stderr, flush=True)
    lengths = [len(x) for x in data.input_ids]
    print(json.dumps({"threads": torch.get_num_threads(), "layers": layers or 30, "steps_per_round": steps,
                      "rounds": rounds, "mean_example_tokens": sum(lengths) / len(lengths),
                      "max_example_tokens": max(lengths),
                      **{f"{'packed' if k else 'padded'}_{kind}_s_per_step": [round(x, 3) for x in v[k]]
                         for kind, v in (("wall", wall), ("cpu", cpu)) for k in (False, True)}}, indent=1))


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [5, 3, 0][len(args):]))
