"""The runner: a study from its config to its summary, through one loop.

- ``start``: ``run`` (the checks before a run, the workers, the study, its lease);
- ``loop``: the one run loop (ask -> schedule -> submit -> done -> record -> tell), in which
  a study without ``[fidelity]`` is the one-rung case of the scheduler;
- ``resume``: a stored study put back into the optimiser and the scheduler;
- ``asker``: the optimiser asked in a thread of its own, ahead of free workers;
- ``output``: the summary, the lines and progress bar, the failure streak;
- ``checkpoints``: multi-fidelity checkpoint housekeeping;
- ``reevaluate``: ``[study] reevaluate``'s extra evaluations of the best configurations.
"""

from llmhpo.runner.loop import build_optimizer
from llmhpo.runner.output import RunSummary
from llmhpo.runner.start import objective_factory, refuse_unguarded_script, run

__all__ = ["RunSummary", "build_optimizer", "objective_factory", "refuse_unguarded_script", "run"]
