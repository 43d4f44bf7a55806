"""Every executor keeps the contract the runner types against (``Executor``): its jobs come
back once each, under their keys, with the value the objective gives in the driver (the Ray
executor's check runs in ``test_ray.py``, on its cluster)."""

import functools

import pytest

from llmhpo.executors import Executor, InlineExecutor, ProcessExecutor, run_objective
from llmhpo.objectives.synthetic import FunctionObjective

FACTORY = functools.partial(FunctionObjective, "branin", None, 0.0)
POINTS = {("job", i): {"x0": -5.0 + 3 * i, "x1": 2.0 * i} for i in range(5)}


def check_contract(ex) -> None:
    """Runs five jobs on ``ex`` and closes it."""
    try:
        assert isinstance(ex, Executor) and ex.retries == [] and len(ex.workers()) == ex.slots
        for key, params in POINTS.items():
            ex.submit(key, params)
        got = {}
        while len(got) < len(POINTS):
            for out in ex.wait(timeout=30):
                assert out.key not in got and out.error is None and out.worker["pid"]
                got[out.key] = out.value
        assert ex.wait(timeout=0) == []  # nothing left: at once, not after the timeout
        objective = FACTORY()
        assert got == {k: run_objective(objective, k, p).value for k, p in POINTS.items()}
    finally:
        ex.close()


@pytest.mark.parametrize("make", [lambda: InlineExecutor(FACTORY), lambda: ProcessExecutor(FACTORY, 2)],
                         ids=["inline", "process"])
def test_an_executor_returns_each_job_once_under_its_key(make):
    check_contract(make())
