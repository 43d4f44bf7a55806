"""Each trial's peak memory in the report (top trials, failures, facts) and in `llmhpo status`."""

import llmhpo
from llmhpo.objectives import Result
from llmhpo.report import write_report
from llmhpo.report._data import StudyData
from llmhpo.report._page import facts, failure_table, top_table
from llmhpo.study import Study

SPACE = {"batch_size": {"type": "int", "low": 1, "high": 64}}


def gpu_trial(batch_size):
    """GPU peaks that grow with the batch; above 48 the trial runs out of memory."""
    if batch_size > 48:
        e = llmhpo.TrialFailed("out of memory (OutOfMemoryError); lower batch_size or max_seq_len, or raise grad_accum")
        e.metrics = {"peak_gpu_memory_mb": 80000.0, "peak_gpu_reserved_mb": 81000.0, "peak_rss_mb": 3000.0,
                     "peak_memory_mb": 80000.0}
        raise e
    gpu = 1000.0 + 100 * batch_size
    return Result(batch_size / 64, {"acc": batch_size / 64, "peak_gpu_memory_mb": gpu, "peak_gpu_reserved_mb": gpu + 512,
                                    "peak_rss_mb": 2500.0, "peak_memory_mb": gpu, "device": "cuda"}, {"train": 1.0})


def study(tmp_path, fn, warm):
    db = f"sqlite:///{tmp_path / 's.db'}"
    llmhpo.optimize(fn, SPACE, trials=len(warm), optimizer="random", direction="maximize", metric="acc",
                    storage=db, study_name="s", quiet=True, max_repeated_failures=0,
                    warm_start=[{"batch_size": b} for b in warm])
    return Study.load(db, "s")


def test_trials_and_failures_show_their_peaks(tmp_path):
    sd = StudyData.of(study(tmp_path, gpu_trial, [8, 32, 64]))
    top = top_table(sd)
    cols = [top.header.index(h) for h in ("peak GPU MiB", "GPU reserved MiB", "peak RSS MiB")]
    assert "peak MiB" not in top.header  # the legacy column only for studies without the others
    rows = {r[0]: [r[c] for c in cols] for r in top.rows}
    assert rows[str(sd.best().number)] == ["4200", "4712", "2500"]
    assert len(rows) == 2 and {"1800", "4200"} == {v[0] for v in rows.values()}
    fails = failure_table(sd)
    assert fails.rows[0][fails.header.index("peak GPU MiB")] == "80000"
    assert fails.header[-1] == "reason" and "out of memory" in fails.rows[0][-1]
    assert set(range(2, len(fails.header) - 1)) <= fails.numeric and fails.wrap == {len(fails.header) - 1}
    fact = dict(facts(sd))["peak memory"]
    assert fact == f"4200 MiB on the GPU for the best trial; highest 80000 MiB on the GPU (trial {sd.failed[0].number})"
    page = write_report(sd, tmp_path / "rep").read_text()
    assert "peak GPU MiB" in page and "peak RSS MiB" in page


def test_a_study_recorded_before_the_split_keeps_its_column(tmp_path):
    def old(batch_size):
        return Result(batch_size / 64, {"acc": batch_size / 64, "peak_memory_mb": 900.0 + batch_size})

    sd = StudyData.of(study(tmp_path, old, [4, 16]))
    top = top_table(sd)
    assert "peak MiB" in top.header and "peak RSS MiB" not in top.header
    assert top.rows[0][top.header.index("peak MiB")] == "916"
    assert dict(facts(sd))["peak memory"] == "916 MiB for the best trial; highest 916 MiB (trial 1)"


def test_without_memory_no_column_and_no_fact(tmp_path):
    sd = StudyData.of(study(tmp_path, lambda batch_size: Result(batch_size / 64, {"acc": batch_size / 64}), [4, 16]))
    assert not any("MiB" in h for h in top_table(sd).header) and "peak memory" not in dict(facts(sd))


def test_status_lists_each_trials_peak(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from llmhpo.cli import app

    study(tmp_path, gpu_trial, [8, 32])
    monkeypatch.setenv("COLUMNS", "200")
    r = CliRunner().invoke(app, ["status", f"sqlite:///{tmp_path / 's.db'}"])
    assert r.exit_code == 0, r.output
    assert "peak MiB" in r.output and "1800" in r.output and "4200" in r.output
