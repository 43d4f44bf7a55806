"""The Ray executor on a local cluster of two simulated nodes: it keeps the executor
contract, an actor computes on the CPUs it reserved, trials spread over both nodes, an actor killed mid-trial or a node lost costs only
the trials it ran (rerun elsewhere), an ASHA study promotes configurations across nodes and
reruns only the rung an actor lost, and the CLI starts a local cluster when no address is
given."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import optuna
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from llmhpo.config import load_config  # noqa: E402
from llmhpo.runner import run  # noqa: E402

from test_executors import FACTORY, check_contract  # noqa: E402
from test_faults import make  # noqa: E402
from test_faults import trials as fault_trials  # noqa: E402

# a two-node Ray cluster and Ray workers: tens of seconds
pytestmark = pytest.mark.slow

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

SLEEP = """
[study]
name = "r"
storage = "sqlite:///r.db"
[budget]
trials = {trials}
[runner]
executor = "ray"
{runner}
[optimizer]
name = "{optimizer}"
[objective]
type = "sleep"
seconds = {seconds}
"""


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of 2 logical CPUs each: 4 trial slots at cpus_per_trial = 1."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1}})
    c.add_node(num_cpus=2, resources={"second": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def write(tmp_path, trials=16, seconds=1.0, runner="", optimizer="random"):
    p = tmp_path / "r.toml"
    p.write_text(SLEEP.format(trials=trials, seconds=seconds, runner=runner, optimizer=optimizer))
    return p


def busy_workers(db) -> int:
    """Workers running a trial, as the driver publishes them for `status` (read-only)."""
    import json
    import sqlite3

    if not db.exists():  # (connecting would create an empty file)
        return 0
    try:
        con = sqlite3.connect(db, timeout=1)  # not mode=ro: a read-only WAL reader in this process
        # can leave the file's shared memory mapped read-only for the connections that follow
        try:
            row = con.execute("select workers from llmhpo_drivers").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return 0 if row is None else sum(w.get("trial") is not None for w in json.loads(row[0]))


def trials(tmp_path, name="r"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'r.db'}").trials


def test_the_ray_executor_keeps_the_executor_contract(cluster):
    from llmhpo.executors import RayExecutor

    check_contract(RayExecutor(FACTORY, workers=2))


def test_an_actor_computes_on_the_cpus_it_reserved(cluster):
    import test_ranks
    from ray import cloudpickle

    from llmhpo.executors import RayExecutor

    cloudpickle.register_pickle_by_value(test_ranks)  # Ray's workers cannot import the tests
    ex = RayExecutor(test_ranks.Threads, workers=1, cpus_per_trial=2)
    try:
        ex.submit("a", {})
        out = []
        while not out:
            out = ex.wait(timeout=60)
    finally:
        ex.close()
        cloudpickle.unregister_pickle_by_value(test_ranks)
    assert out[0].error is None and out[0].metrics == {"threads": 2, "env": "2"}


def test_sixteen_one_second_trials_on_four_actors_over_two_nodes(cluster, tmp_path):
    s = run(load_config(write(tmp_path)), progress=False)  # workers unset: as many as the cluster fits
    ts = trials(tmp_path)
    assert s.complete == 16 and [t.state.name for t in ts] == ["COMPLETE"] * 16
    starts = [t.user_attrs["worker"]["start"] for t in ts]
    ends = [t.user_attrs["worker"]["end"] for t in ts]
    assert max(ends) - min(starts) < 8  # 4 at a time: ~4 s; one at a time would be 16 s
    nodes = {t.user_attrs["worker"]["node"] for t in ts}
    assert len(nodes) == 2  # both nodes ran trials
    assert len({t.user_attrs["worker"]["pid"] for t in ts}) == 4  # long-lived actors, reused


def test_an_actor_killed_mid_trial_costs_only_its_trial(cluster, tmp_path):
    s = run(load_config(make(tmp_path, "kill.flag", trials=8, runner='executor = "ray"')), progress=False)
    ts = fault_trials(tmp_path)
    assert s.complete == 8 and [t.state.name for t in ts] == ["COMPLETE"] * 8
    retried = [t for t in ts if t.user_attrs.get("retries")]
    assert len(retried) == 1 and "Ray worker actor" in retried[0].user_attrs["retry_1_reason"]


ASHA = """
[study]
name = "mf"
seed = 3
storage = "sqlite:///mf.db"
[budget]
resource = {budget}
[runner]
executor = "ray"
max_retries = 1
[optimizer]
name = "random"
[objective]
type = "sleep"
seconds = {seconds}
function = "branin"
log = "{log}"
[fidelity]
min = 1
max = 9
eta = 3
scheduler = "asha"
"""


def promotion_running(db) -> tuple[int, int, int] | None:
    """(trial number, rung, worker pid) of a promotion (rung >= 1) running now, as the
    driver's storage and its published workers say; None if there is none."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            rows = con.execute("select t.number, a.value_json from trials t join trial_user_attributes a "
                               "on a.trial_id = t.trial_id where t.state = 'RUNNING' and a.key = 'rung'").fetchall()
            published = con.execute("select workers from llmhpo_drivers").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    pids = {w.get("trial"): w.get("pid") for w in json.loads(published[0])} if published else {}
    for number, rung in rows:
        if json.loads(rung) >= 1 and pids.get(number):
            return number, json.loads(rung), pids[number]
    return None


def intermediate_values(db, number) -> dict[int, float]:
    con = sqlite3.connect(db, timeout=5)
    try:
        return dict(con.execute("select v.step, v.intermediate_value from trial_intermediate_values v join trials t "
                                "on t.trial_id = v.trial_id where t.number = ?", (number,)).fetchall())
    finally:
        con.close()


def test_asha_promotes_across_nodes_and_a_lost_actor_reruns_only_its_rung(cluster, tmp_path):
    """An ASHA study on four actors over two nodes (rungs 1, 3, 9 steps): it spends its
    budget, promotions go on from checkpoints on whichever node is free, and the actor of a
    promotion killed mid-rung costs that rung only: it runs again, the earlier rungs do not."""
    budget, per_step = 72, 0.5  # seconds per step: rung 1 takes 1 s, rung 2 takes 3 s
    (tmp_path / "mf.toml").write_text(ASHA.format(budget=budget, seconds=9 * per_step, log=tmp_path / "evals.jsonl"))
    db, killed = tmp_path / "mf.db", {}

    def kill_one_promotion():  # as the OOM killer would, once the rung has run ~0.4 s of its >= 1 s
        seen: dict[tuple[int, int], float] = {}
        deadline = time.time() + 60
        while time.time() < deadline:
            found = promotion_running(db)
            if found is not None:
                number, rung, pid = found
                first = seen.setdefault((number, rung), time.time())
                if time.time() - first >= 0.3:
                    killed.update(number=number, rung=rung, before=intermediate_values(db, number))
                    os.kill(pid, signal.SIGKILL)
                    return
            time.sleep(0.05)

    threading.Thread(target=kill_one_promotion, daemon=True).start()
    s = run(load_config(tmp_path / "mf.toml"), progress=False)
    assert killed, "no promotion ran long enough to be killed"
    ts = optuna.load_study(study_name="mf", storage=f"sqlite:///{db}").trials
    states = Counter(t.state.name for t in ts)

    # (a) the budget spent, COMPLETE and PRUNED trials whose intermediate values are their rung scores
    assert s.stopped == "budget" and budget - 6 < s.resource_spent <= budget, s
    assert set(states) == {"COMPLETE", "PRUNED"}, states
    runs = defaultdict(list)  # the sleep objective's log: one line per rung it finished
    for line in (tmp_path / "evals.jsonl").read_text().splitlines():
        e = json.loads(line)
        runs[tuple(sorted(e["params"].items()))].append(e)
    for t in ts:
        done = runs[tuple(sorted(t.params.items()))]
        assert len(done) == len(t.intermediate_values), t.number  # no rung evaluated twice
        assert t.intermediate_values == {int(e["steps"]): e["value"] for e in done}, t.number
        assert sum(e["trained"] for e in done) == max(t.intermediate_values)  # every step trained once
        if t.state.name == "COMPLETE":
            assert t.value == t.intermediate_values[9]

    # (b) each rung records its worker; some promotion ran on another node than its first rung
    crossed = 0
    for t in ts:
        where = t.user_attrs["rung_workers"]
        assert [w["rung"] for w in where] == list(range(len(t.intermediate_values)))  # no rung twice
        crossed += any(w["node"] != where[0]["node"] for w in where[1:])
    assert crossed >= 1 and len({w["node"] for t in ts for w in t.user_attrs["rung_workers"]}) == 2

    # (c) the killed rung ran again, on a fresh attempt; the rungs before it kept their scores
    retried = [t for t in ts if t.user_attrs.get("retries")]
    assert [t.number for t in retried] == [killed["number"]]
    t = retried[0]
    assert "Ray worker actor" in t.user_attrs["retry_1_reason"]
    assert len(killed["before"]) == killed["rung"]  # the kill hit the rung after those scored
    assert {k: t.intermediate_values[k] for k in killed["before"]} == killed["before"]
    assert len(t.intermediate_values) > killed["rung"]  # the killed rung has its score now


def test_a_lost_node_costs_only_the_trials_it_ran(cluster, tmp_path):
    """A third node joins, runs trials, and is removed mid-trial: its trials run again on the
    other nodes; the study ends with exactly its budget."""
    extra = cluster.add_node(num_cpus=2, resources={"third": 1})
    cluster.wait_for_nodes()

    def remove_soon():  # once all six actors (two of them on the third node) run a trial
        deadline = time.time() + 60
        while busy_workers(tmp_path / "r.db") < 6 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        cluster.remove_node(extra)

    threading.Thread(target=remove_soon, daemon=True).start()
    s = run(load_config(write(tmp_path, trials=18, seconds=1.5, runner="workers = 6\nmax_retries = 2")),
            progress=False)
    ts = trials(tmp_path)
    assert s.complete == 18 and [t.state.name for t in ts] == ["COMPLETE"] * 18
    retried = [t for t in ts if t.user_attrs.get("retries")]
    assert len(retried) == 2 and all("Ray worker actor" in t.user_attrs["retry_1_reason"] for t in retried)


def test_cli_starts_a_local_cluster_without_an_address(tmp_path):
    write(tmp_path, trials=4, seconds=0.2, runner="workers = 2\ncpus_per_trial = 0.5")
    env = {**os.environ, "RAY_ADDRESS": ""}
    r = subprocess.run([sys.executable, "-m", "llmhpo.cli", "run", "r.toml", "--no-progress"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "4 complete, 0 failed" in r.stdout


def test_a_multi_objective_constrained_study_on_ray(cluster, tmp_path):
    p = tmp_path / "r.toml"
    p.write_text(SLEEP.format(trials=8, seconds=0.2, runner="workers = 4", optimizer="optuna_nsga2")
                 .replace('storage = "sqlite:///r.db"', 'storage = "sqlite:///r.db"\nobjectives = [{ metric = '
                          '"branin", direction = "minimize" }, { metric = "currin", direction = "minimize" }]')
                 .replace('name = "optuna_nsga2"', 'name = "optuna_nsga2"\npopulation_size = 4')
                 + 'function = "branin_currin"\n[[constraint]]\nmetric = "timings.sleep"\nmax = 60\n')
    s = run(load_config(p), progress=False, quiet=True)
    ts = trials(tmp_path)
    assert s.complete == 8 and all(len(t.values) == 2 and t.constraints == {"0": pytest.approx(t.user_attrs[
        "timings"]["sleep"] - 60)} for t in ts)
    assert len({t.user_attrs["worker"]["node"] for t in ts}) == 2
    assert sorted(s.pareto) == sorted(t.number for t in optuna.load_study(
        study_name="r", storage=f"sqlite:///{tmp_path / 'r.db'}").best_trials)
