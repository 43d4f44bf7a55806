"""The Ray executor on a local cluster of two simulated nodes: trials spread over both,
an actor killed mid-trial or a node lost costs only the trials it ran (rerun elsewhere),
and the CLI starts a local cluster when no address is given."""

import os
import subprocess
import sys
import time

import optuna
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from llmhpo.config import load_config  # noqa: E402
from llmhpo.runner import run  # noqa: E402

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


def test_a_lost_node_costs_only_the_trials_it_ran(cluster, tmp_path):
    """A third node joins, runs trials, and is removed mid-trial: its trials run again on the
    other nodes; the study ends with exactly its budget."""
    extra = cluster.add_node(num_cpus=2, resources={"third": 1})
    cluster.wait_for_nodes()
    import threading

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
