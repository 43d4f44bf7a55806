"""Instruction data: load (builtin generator, hub id, local JSON/JSONL), split off a
held-out set, format with the Alpaca template or the tokenizer's chat template,
tokenise with the loss on response tokens only (prompt labels are -100), and batch
(right-padded rows, or one padding-free packed row)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmhpo.errors import ObjectiveSetupError
from llmhpo.objectives.finetune.config import DataConfig
from llmhpo.objectives.finetune.tasks import alpaca_prompt, instruction_data

IGNORE = -100


def load_records(cfg: DataConfig) -> list[dict]:
    """All records as dicts with instruction / input / output (strings)."""
    name = cfg.dataset
    if name.startswith("builtin:"):
        skills = name.split(":", 1)[1].split("+")
        n = (cfg.max_examples or 2000) + cfg.val_examples
        return instruction_data(skills, n, cfg.seed)
    p = Path(name).expanduser()
    if p.suffix in (".json", ".jsonl"):
        if not p.is_file():
            raise ObjectiveSetupError(f"[data] dataset = {name!r}: no such file")
        text = p.read_text()
        try:
            rows = json.loads(text) if p.suffix == ".json" else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        except json.JSONDecodeError as e:
            raise ObjectiveSetupError(f"[data] dataset = {name!r} is not valid JSON: {e}") from e
    else:
        try:
            import datasets

            rows = list(datasets.load_dataset(name, split=cfg.split))
        except Exception as e:
            offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = ("no network (HF_DATASETS_OFFLINE=1): set [data] dataset to a local .jsonl file "
                    "or builtin:add" if offline else f"check the dataset id and split ({e})")
            raise ObjectiveSetupError(f"cannot load dataset {name!r}: {hint}") from e
    if not isinstance(rows, list) or not rows:
        raise ObjectiveSetupError(f"[data] dataset = {name!r} holds no records")
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or "instruction" not in r or "output" not in r:
            raise ObjectiveSetupError(f"[data] record {i} of {name!r} needs 'instruction' and 'output' fields")
        out.append({"instruction": str(r["instruction"]), "input": str(r.get("input") or ""), "output": str(r["output"])})
    return out


def split(records: list[dict], cfg: DataConfig) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a seeded shuffle, then the first val_examples are held out."""
    order = np.random.default_rng([cfg.seed, 3]).permutation(len(records))
    shuffled = [records[i] for i in order]
    val = shuffled[: cfg.val_examples]
    train = shuffled[cfg.val_examples:]
    if cfg.max_examples is not None:
        train = train[: cfg.max_examples]
    if not train:
        raise ObjectiveSetupError(f"[data] {cfg.dataset!r} leaves no training example after holding out "
                                  f"{cfg.val_examples}; lower val_examples")
    return train, val


def prompt_of(record: dict, tokenizer, template: str) -> str:
    if template == "chat":
        content = record["instruction"] + (f"\n\n{record['input']}" if record["input"] else "")
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    return alpaca_prompt(record["instruction"], record["input"])


@dataclass
class Tokenized:
    """input_ids / labels per example (lists of ints, unpadded)."""

    input_ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize(records: list[dict], tokenizer, template: str, max_len: int) -> Tokenized:
    """Prompt + response + EOS, truncated to max_len; the loss sees response tokens only."""
    ids, labels = [], []
    for r in records:
        p = tokenizer(prompt_of(r, tokenizer, template), add_special_tokens=False)["input_ids"]
        a = tokenizer(r["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        x = (p + a)[:max_len]
        y = ([IGNORE] * len(p) + a)[:max_len]
        if all(v == IGNORE for v in y):
            continue  # the prompt alone fills max_len: nothing to learn from this example
        ids.append(x)
        labels.append(y)
    if not ids:
        raise ObjectiveSetupError(f"every example's prompt is longer than max_seq_len = {max_len}; raise it")
    return Tokenized(ids, labels)


def collate(batch_ids: list[list[int]], batch_labels: list[list[int]], pad_id: int):
    """Right-padded tensors: input_ids (b, T), attention_mask (b, T), labels (b, T)."""
    import torch

    T = max(len(x) for x in batch_ids)
    ids = torch.full((len(batch_ids), T), pad_id, dtype=torch.long)
    lab = torch.full((len(batch_ids), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch_ids), T), dtype=torch.long)
    for i, (x, y) in enumerate(zip(batch_ids, batch_labels)):
        ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, mask, lab


def pack(batch_ids: list[list[int]], batch_labels: list[list[int]]):
    """One padding-free row: input_ids (1, T), position_ids (1, T), labels (1, T), T the
    examples' total length. Positions restart at 0 for each example, which is how the model
    tells the examples apart (transformers builds a block-diagonal causal mask from them when
    no attention mask is given; flash attention reads them directly). Each example's first
    label is -100, so no token predicts across a boundary: the loss is that of the padded batch."""
    import torch

    ids = torch.tensor([t for x in batch_ids for t in x], dtype=torch.long).unsqueeze(0)
    pos = torch.tensor([p for x in batch_ids for p in range(len(x))], dtype=torch.long).unsqueeze(0)
    lab = torch.tensor([t for y in batch_labels for t in [IGNORE] + y[1:]], dtype=torch.long).unsqueeze(0)
    return ids, pos, lab


def n_targets(labels: list[int]) -> int:
    """The tokens an example is scored on: response labels after the first position (the
    first token is never predicted)."""
    return sum(1 for v in labels[1:] if v != IGNORE)
