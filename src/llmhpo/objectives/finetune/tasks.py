"""The project's own offline tasks: instruction data a small model can learn in a few dozen
LoRA steps, held-out 4-choice questions on the same skills, and a general-knowledge set
that watches for forgetting (the role MMLU plays in the report). All of it is generated
deterministically and written as lm-eval local tasks (``dataset_path: json``).

Skills: ``add`` (two-digit addition), ``sub`` (two-digit subtraction), ``letters`` (the
letter after a given one). lm-eval tasks: ``llmhpo_<skill>`` and ``llmhpo_general``, and
``llmhpo_story``, shaped like HellaSwag (a context of about 100 tokens, four endings of
about 20, one of which fits the story): the shape that scoring cost depends on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmhpo.errors import ConfigError

SKILLS = ("add", "sub", "letters")
GENERAL_TASK = "llmhpo_general"
STORY_TASK = "llmhpo_story"
FORMAT_VERSION = 1

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt (Taori et al. 2023), with or without an input field."""
    if input:
        return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=input)
    return ALPACA_PROMPT.format(instruction=instruction)


# ---------------------------------------------------------------- skills
# each: rng -> (instruction, answer, three distractors)
def _add(rng: np.random.Generator) -> tuple[str, str, list[str]]:
    a, b = (int(v) for v in rng.integers(10, 100, size=2))
    c = a + b
    return f"What is {a} + {b}?", str(c), _near_misses(rng, c)


def _sub(rng: np.random.Generator) -> tuple[str, str, list[str]]:
    a, b = sorted((int(v) for v in rng.integers(10, 100, size=2)), reverse=True)
    c = a - b
    return f"What is {a} - {b}?", str(c), _near_misses(rng, c)


def _letters(rng: np.random.Generator) -> tuple[str, str, list[str]]:
    letters = string.ascii_uppercase
    i = int(rng.integers(0, 25))
    wrong = [letters[j] for j in rng.permutation(26) if j not in (i, i + 1)][:3]
    return f"Which letter comes right after {letters[i]} in the alphabet?", letters[i + 1], wrong


def _near_misses(rng: np.random.Generator, c: int) -> list[str]:
    """Three wrong answers close to c (off by one, ten, or a digit swap): a real test."""
    pool = [c + d for d in (1, -1, 2, -2, 10, -10, 11, -11, 9, -9)]
    swap = int(str(c)[::-1]) if c >= 10 else None
    if swap is not None and swap != c:
        pool.append(swap)
    pool = sorted({v for v in pool if v >= 0 and v != c})
    return [str(v) for v in rng.choice(pool, size=3, replace=False)]


_SKILLS: dict[str, Callable[[np.random.Generator], tuple[str, str, list[str]]]] = {
    "add": _add, "sub": _sub, "letters": _letters}


def instruction_data(skills: list[str] | tuple[str, ...] = ("add",), n: int = 2000, seed: int = 0) -> list[dict]:
    """n instruction/input/output records mixing the skills (deterministic in ``seed``)."""
    _check_skills(skills)
    rng = np.random.default_rng([seed, 1])
    out = []
    for k in range(n):
        q, a, _ = _SKILLS[skills[k % len(skills)]](rng)
        out.append({"instruction": q, "input": "", "output": a})
    return out


def questions(skill: str, n: int = 200, seed: int = 0) -> list[dict]:
    """Held-out 4-choice questions for one skill; none repeats a training instruction."""
    _check_skills([skill])
    train = {r["instruction"] for r in instruction_data([skill], 5000, seed)}
    rng = np.random.default_rng([seed, 2, SKILLS.index(skill)])
    out, seen = [], set()
    for _ in range(100 * n):
        if len(out) == n:
            break
        q, a, wrong = _SKILLS[skill](rng)
        if q in seen or q in train:
            continue
        seen.add(q)
        choices = [a, *wrong]
        order = rng.permutation(4)
        choices = [choices[i] for i in order]
        out.append({"question": q, "prompt": alpaca_prompt(q), "choices": choices,
                    "answer": int(np.flatnonzero(order == 0)[0])})
    return out


def general_knowledge() -> list[dict]:
    text = resources.files("llmhpo.objectives.finetune").joinpath("data/general_knowledge.jsonl").read_text()
    out = []
    for line in text.splitlines():
        if line.strip():
            r = json.loads(line)
            r["prompt"] = alpaca_prompt(r["question"])
            out.append(r)
    return out


# ---------------------------------------------------------------- stories (HellaSwag-shaped)
# activity -> (what is decided, where, what is gathered, the ending that fits)
_ACTIVITIES = {
    "bake": ("bake a loaf of bread for the family dinner", "kitchen", "flour, yeast, salt and a large mixing bowl",
             "took the warm golden loaf out of the oven and left it on the rack to cool before dinner."),
    "paint": ("paint the old wooden fence behind the house", "garden shed", "two brushes, a ladder and a can of white paint",
              "stepped back to admire the freshly painted fence, now bright white from one end to the other."),
    "fish": ("go fishing at the lake before the crowds arrived", "boathouse", "a rod, a box of hooks and a bucket of worms",
             "reeled in a large silver trout, the first catch of the morning, and placed it in the bucket."),
    "knit": ("knit a warm scarf for a friend's birthday", "sewing room", "three balls of blue wool and a pair of long needles",
             "cast off the last stitch and held up a long blue scarf, soft and ready to be wrapped as a gift."),
    "repair": ("repair the bicycle that had a flat tyre", "garage", "a pump, a patch kit and a set of small spanners",
               "pumped the patched tyre up to full pressure and rode the bicycle once around the block to test it."),
    "plant": ("plant tomatoes in the vegetable patch", "greenhouse", "a tray of seedlings, a trowel and a watering can",
              "pressed the soil around the last tomato seedling and gave the whole row a long drink of water."),
}
_NAMES = ("Anna", "Ben", "Clara", "David", "Ella", "Frank", "Grace", "Henry", "Iris", "Jack")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_FILLERS = ("The sky was grey and a light wind moved through the trees along the street.",
            "A neighbour waved from across the road and asked how the week had been going.",
            "The radio in the corner played old songs that nobody in the house had heard in years.",
            "Somewhere down the lane a dog barked twice and then fell quiet again.",
            "It had rained during the night, and the path was still wet and shining in the sun.",
            "A cup of tea went cold on the windowsill, forgotten for most of the morning.")


def stories(n: int = 200, seed: int = 0) -> list[dict]:
    """n HellaSwag-shaped questions: a story of about 100 tokens and four endings, one of
    which finishes the activity the story set up (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 4])
    kinds = list(_ACTIVITIES)
    out = []
    for _ in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        goal, place, things, ending = _ACTIVITIES[kind]
        name = _NAMES[int(rng.integers(len(_NAMES)))]
        fill = [_FILLERS[int(i)] for i in rng.choice(len(_FILLERS), size=2, replace=False)]
        prompt = (f"{name} woke up early on {_DAYS[int(rng.integers(7))]} and decided to {goal}. {fill[0]} "
                  f"{name} went out to the {place} and gathered {things}. {fill[1]} "
                  f"The work took most of the morning, with a short break for lunch. At last, {name}")
        wrong = [_ACTIVITIES[k][3] for k in rng.choice([k for k in kinds if k != kind], size=3, replace=False)]
        choices = [ending, *wrong]
        order = rng.permutation(4)
        out.append({"prompt": prompt, "choices": [" " + choices[i] for i in order],
                    "answer": int(np.flatnonzero(order == 0)[0])})
    return out


def _check_skills(skills) -> None:
    bad = [s for s in skills if s not in _SKILLS]
    if bad or not skills:
        raise ConfigError(f"unknown skill {bad[0] if bad else None!r}; builtin skills are: {', '.join(SKILLS)}")


# ---------------------------------------------------------------- lm-eval task files
_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: {version}
"""


def cache_dir() -> Path:
    return Path(os.environ.get("LLMHPO_CACHE", Path.home() / ".cache" / "llmhpo"))


def write_tasks(root: Path | None = None, n_questions: int = 200, seed: int = 0) -> Path:
    """Write every builtin task (JSONL + lm-eval YAML) under ``root``; returns the folder.

    The folder name carries a hash of the inputs, so a folder is written once and reused.
    """
    # the task names too: a folder written before a task was added is not reused without it
    inputs = [FORMAT_VERSION, n_questions, seed, builtin_task_names()]
    key = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:10]
    folder = Path(root or cache_dir() / "tasks") / f"llmhpo-tasks-{key}"
    if (folder / "done").exists():
        return folder
    # written aside and renamed into place: parallel workers never see a half-written folder
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[dict[str, Any]]] = {f"llmhpo_{s}": questions(s, n_questions, seed) for s in SKILLS}
    sets[GENERAL_TASK] = general_knowledge()
    sets[STORY_TASK] = stories(n_questions, seed)
    for task, rows in sets.items():
        (tmp / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        data = (folder / f"{task}.jsonl").resolve()
        (tmp / f"{task}.yaml").write_text(_YAML.format(task=task, path=data, version=FORMAT_VERSION))
    (tmp / "done").write_text("ok\n")
    try:
        tmp.rename(folder)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def builtin_task_names() -> list[str]:
    return [f"llmhpo_{s}" for s in SKILLS] + [GENERAL_TASK, STORY_TASK]
