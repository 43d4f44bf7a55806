"""Checkpoint housekeeping of multi-fidelity studies: where a configuration's checkpoint
lives, and deleting those that no promotion can use any more (a study of a 7B model keeps
gigabytes per waiting configuration)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from llmhpo.config import Config
from llmhpo.runner.resume import Conf
from llmhpo.schedulers import Scheduler
from llmhpo.study import Study


def checkpoint_dir(config: Config, number: int) -> Path:
    """The folder of trial ``number``'s checkpoint."""
    root = Path(config.fidelity.checkpoint_dir).expanduser()
    if not root.is_absolute():
        root = Path(config.base_dir) / root
    return root / config.study.name / "checkpoints" / f"trial-{number}"


def collect(config: Config, study: Study, scheduler: Scheduler, confs: dict[int, Conf], running: Any) -> None:
    """Delete the checkpoints no promotion can use: stopped and finished configurations, and
    waiting ones ranked below their rung's promotion slots plus ``[fidelity] keep_checkpoints``.
    A waiting configuration whose checkpoint went trains from the start if promoted."""
    keep = scheduler.keep_checkpoints(config.fidelity.keep_checkpoints)
    for cid, c in scheduler.configs.items():
        if cid in running or c.running is not None or cid in keep:
            continue
        folder = checkpoint_dir(config, confs[cid].number)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            if not c.stopped and c.top is not None and c.top < scheduler.K:  # may still be promoted
                confs[cid].attrs["checkpoint_deleted"] = True
                study.note_checkpoint(confs[cid].trial_id, True)


def close_study(config: Config, study: Study, scheduler: Scheduler, confs: dict[int, Conf], running: Any,
                log: Callable[[int], None]) -> None:
    """The study's budget is spent: configurations still waiting for a promotion stop here
    (PRUNED, checkpoint deleted); one cut short before its first rung ended is interrupted."""
    for cid, c in scheduler.configs.items():
        cut_short = c.running is not None and cid not in running  # the budget left no room to rerun it
        if not c.stopped and (c.running is None or cut_short) and c.top is not None and c.top < scheduler.K \
                and c.results.get(c.top) is not None:
            study.prune(confs[cid].trial_id)
            log(confs[cid].trial_id)
            shutil.rmtree(checkpoint_dir(config, confs[cid].number), ignore_errors=True)
        elif cut_short and c.top is None:
            study.mark_interrupted(confs[cid].trial_id)
