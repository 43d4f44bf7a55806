"""`llmhpo demo` as `make demo` runs it: a fresh folder, a real SQLite storage and driver
lease, the base model scored once; rerun on the finished study, extended, interrupted and
resumed (a small model instead of SmolLM2, so that each run takes seconds)."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest


def demo(out, model, *args, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "llmhpo.cli", "demo", "--out", str(out), "--model", str(model),
                           *args], capture_output=True, text=True, timeout=timeout, env=env)


def stored(out):
    return optuna.load_study(study_name="demo", storage=f"sqlite:///{out / 'demo.db'}")


@pytest.mark.slow
def test_demo_first_run_rerun_more_trials_and_interrupt(tiny_llama, tmp_path):
    out = tmp_path / "demo"
    r = demo(out, tiny_llama, "--trials", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "scoring the base model" in r.stdout and "another driver" not in r.stdout + r.stderr
    st = stored(out)
    base = st.user_attrs["base_value"]
    assert [t.state.name for t in st.trials] == ["COMPLETE"]
    result = json.loads((out / "demo-result.json").read_text())
    assert result["base"] == base and result["trials"] == 1

    # the finished demo again: nothing refuses it, the stored base score is reused
    r = demo(out, tiny_llama, "--trials", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "scoring the base model" not in r.stdout
    assert f"base model   llmhpo_add/acc = {base:.3f}" in r.stdout
    assert len(stored(out).trials) == 1

    # more trials extend the same study; interrupted during the new trial, then run again
    p = subprocess.Popen([sys.executable, "-m", "llmhpo.cli", "demo", "--out", str(out), "--model", str(tiny_llama),
                          "--trials", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1"),
                         # a pytest-xdist worker ignores SIGINT, and a child would inherit that: Python
                         # installs its Ctrl-C handler only where SIGINT is at its default
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in p.stdout:  # unbuffered: each line as it is written, not when a pipe's buffer fills
        seen.append(line)
        if "trial 1 started" in line:
            break
    time.sleep(1)
    p.send_signal(signal.SIGINT)
    rest = ""
    for _ in range(24):  # under a loaded machine's timing a first Ctrl-C was seen to go unheard: press again
        try:
            rest += p.communicate(timeout=5)[0]
            break
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)
    assert p.returncode == 130, "".join(seen) + rest
    assert "run `llmhpo demo` again to resume" in rest
    r = demo(out, tiny_llama, "--trials", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "scoring the base model" not in r.stdout
    st = stored(out)
    assert [t.state.name for t in st.trials if not t.user_attrs.get("interrupted")] == ["COMPLETE", "COMPLETE"]
    assert st.user_attrs["base_value"] == base
