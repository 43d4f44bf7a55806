"""Record real evaluations of the offline fine-tuning objective (the demo's: SmolLM2-135M-Instruct,
LoRA on the builtin addition task, lm-eval on 40 + 40 held-out questions) over the report's
search space, every rung of a 3-rung schedule (steps 4, 8, 16: one run continued exactly, as
multi-fidelity trials do), several training seeds on a share of the configurations for the
noise. The table (``src/llmhpo/objectives/data/lora_smollm2.csv``) is what the ``lora`` bench family's
surrogate is fitted on (``llmhpo.objectives.recorded``).

Configurations: a scrambled Sobol sequence over the space (seed 0), in its order, so any prefix
covers the space; every ``--repeat-every``-th configuration is also trained with seeds 1 and 2.
Below the top rung each task is scored on 20 questions (``[eval] low_rung_limit``, as llmhpo's
multi-fidelity studies do), at the top on 40.

Rows are appended as runs finish and a rerun skips what is recorded, so the recording can be
stopped and continued; several processes share the work (each claims a run before it starts).

usage: OMP_NUM_THREADS=1 python benchmarks/record_lora.py [--configs 128] [--repeat-every 8]
       [--threads 1] [--out src/llmhpo/objectives/data/lora_smollm2.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from importlib import resources  # noqa: E402

import numpy as np  # noqa: E402

from llmhpo.config import Config  # noqa: E402
from llmhpo.objectives import Fidelity  # noqa: E402

RUNGS = (4, 8, 16)
SPACE = ("learning_rate", "lora_rank", "lora_alpha", "lora_dropout", "weight_decay")
COLUMNS = ("config", "seed", "rung", *SPACE, "add_acc", "general_acc", "val_loss", "train_loss",
           "train_seconds", "eval_seconds")


def demo_config(threads: int) -> Config:
    raw = tomllib.loads(resources.files("llmhpo").joinpath("demo.toml").read_text())
    raw.pop("warm_start", None)
    raw["train"]["threads"] = threads
    raw["eval"]["low_rung_limit"] = 20
    return Config.from_dict(raw, default_name="record", base_dir=Path(tempfile.gettempdir()))


def plan(cfg: Config, n: int, repeat_every: int) -> list[tuple[int, int, dict]]:
    """(config id, seed, params) in recording order."""
    from scipy.stats import qmc

    U = qmc.Sobol(d=len(cfg.space.names), scramble=True, seed=0).random(n)
    out = []
    for i, u in enumerate(U):
        params = cfg.space.decode(cfg.space.snap(u))
        out.append((i, 0, params))
        if repeat_every and i % repeat_every == 0:
            out += [(i, s, params) for s in (1, 2)]
    return out


def recorded(path: Path) -> set[tuple[int, int]]:
    if not path.is_file():
        return set()
    rungs: dict[tuple[int, int], set[int]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            rungs.setdefault((int(row["config"]), int(row["seed"])), set()).add(int(row["rung"]))
    return {k for k, v in rungs.items() if v >= set(RUNGS)}


def claim(out: Path, cid: int, seed: int) -> bool:
    """True when this process may record (cid, seed): nobody recorded it, and no live process
    claimed it (a claim is a file holding its process id)."""
    if (cid, seed) in recorded(out):
        return False
    d = out.with_name(out.name + ".claims")
    d.mkdir(exist_ok=True)
    f = d / f"{cid}-{seed}"
    try:
        fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(f.read_text() or 0), 0)
            return False  # a live process records it
        except (ProcessLookupError, ValueError):
            f.unlink(missing_ok=True)  # left by a stopped process
            return claim(out, cid, seed)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=128)
    ap.add_argument("--repeat-every", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="src/llmhpo/objectives/data/lora_smollm2.csv")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(a.threads)
    from llmhpo.objectives.finetune import FinetuneObjective

    objective = FinetuneObjective(cfg.objective.resolved())
    done = recorded(out)
    todo = [job for job in plan(cfg, a.configs, a.repeat_every) if (job[0], job[1]) not in done]
    print(f"{len(todo)} runs to record ({len(done)} recorded)", file=sys.stderr, flush=True)
    t0 = time.time()
    for j, (cid, seed, params) in enumerate(todo):
        if not claim(out, cid, seed):
            continue
        ck = Path(tempfile.mkdtemp(prefix="llmhpo-record-"))
        rows = []
        try:
            for rung in RUNGS:
                r = objective({**params, "seed": seed}, fidelity=Fidelity("max_steps", rung, RUNGS[-1], str(ck)))
                m = r.metrics
                rows.append({"config": cid, "seed": seed, "rung": rung, **{p: params[p] for p in SPACE},
                             "add_acc": r.value, "general_acc": m.get("llmhpo_general/acc"),
                             "val_loss": m.get("val_loss"), "train_loss": m.get("final_train_loss"),
                             "train_seconds": round(r.timings.get("train", float("nan")), 2),
                             "eval_seconds": round(r.timings.get("eval", float("nan")), 2)})
        except Exception as e:  # a diverged run: every rung it did not reach scores nothing
            print(f"config {cid} seed {seed}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            rows += [{"config": cid, "seed": seed, "rung": rung, **{p: params[p] for p in SPACE}}
                     for rung in RUNGS[len(rows):]]
        finally:
            shutil.rmtree(ck, ignore_errors=True)
        new = not out.is_file()
        with out.open("a", newline="") as f:  # whole runs at once: a stopped recording leaves none half
            w = csv.DictWriter(f, COLUMNS)
            if new:
                w.writeheader()
            w.writerows(rows)
        print(f"[{j + 1}/{len(todo)}, {time.time() - t0:.0f} s] config {cid} seed {seed} "
              f"lr {params['learning_rate']:.2e}: " + ", ".join(f"{r.get('add_acc')}" for r in rows),
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
