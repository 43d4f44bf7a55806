"""Scoring with lm-eval: shared multiple-choice contexts give plain HFLM's log-likelihoods
for fewer tokens of work, each task's requests are timed on their own, and [eval]
batch_size "auto" falls back to a fixed batch off CUDA."""

import pytest

from llmhpo.errors import ConfigError
from llmhpo.objectives.finetune.config import EvalConfig, FinetuneConfig
from llmhpo.objectives.finetune.evaluate import AUTO_CPU_BATCH, batch_size
from llmhpo.objectives.finetune.scoring import _chunks, _shareable, scoring_lm
from llmhpo.objectives.finetune.tasks import alpaca_prompt, questions, stories


@pytest.fixture(scope="module")
def tiny_model(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    # its rotary positions have no hard limit: lm-eval's max_length follows this, and the
    # stories (~300 of its tokens) fit
    model.config.max_position_embeddings = 1024
    return model, AutoTokenizer.from_pretrained(tiny_llama)


def instances(rows, task):
    """lm-eval's loglikelihood requests for multiple-choice rows (prompt, choices), as a task makes them."""
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, (r["prompt"], c), k, (task, d, 1))
            for d, r in enumerate(rows) for k, c in enumerate(r["choices"])]


def score(model, tok, requests, shared, bs=8):
    """(answers, input tokens the model ran) for ``requests`` with shared contexts on or off."""
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: seen.append((kw.get("input_ids", a[0] if a else None))
                                                                        .numel()), with_kwargs=True)
    try:
        lm = scoring_lm()(pretrained=model, tokenizer=tok, batch_size=bs, shared_context=shared)
        return lm.loglikelihood(requests), sum(seen), lm
    finally:
        hook.remove()


def mixed_requests():
    """Stories (long shared contexts of different lengths, four long endings), questions
    with short answers, and a request alone with its context."""
    reqs = instances(stories(5), "llmhpo_story") + instances(questions("add", 3), "llmhpo_add")
    return reqs + instances([{"prompt": alpaca_prompt("Say hello."), "choices": [" hello there"]}], "alone")


@pytest.mark.parametrize("bs", [8, 3])  # two contexts a chunk (left padding), and a group larger than the batch
def test_shared_contexts_give_plain_loglikelihoods_for_less_work(tiny_model, bs):
    model, tok = tiny_model
    reqs = mixed_requests()
    plain, plain_tokens, _ = score(model, tok, reqs, shared=False, bs=bs)
    shared, shared_tokens, _ = score(model, tok, reqs, shared=True, bs=bs)
    assert len(shared) == len(plain) == len(reqs)
    for (a, greedy_a), (b, greedy_b) in zip(plain, shared):
        assert b == pytest.approx(a, abs=1e-4) and greedy_a == greedy_b
    assert shared_tokens < 0.6 * plain_tokens  # each story's context ran once, not four times


def test_a_cache_that_cannot_be_shared_falls_back_to_plain_scoring(tiny_model, monkeypatch):
    from transformers import DynamicCache

    def cannot(self, indices):
        raise NotImplementedError("no batch selection")

    monkeypatch.setattr(DynamicCache, "batch_select_indices", cannot)
    reqs = instances(stories(2), "llmhpo_story")
    plain, _, _ = score(*tiny_model, reqs, shared=False)
    with pytest.warns(UserWarning, match="shared_context = false"):
        answers, _, lm = score(*tiny_model, reqs, shared=True)
    assert answers == plain and not lm.shared_context


def test_only_worthwhile_groups_are_shared():
    def req(ctx, cont):
        return (("c", "x"), ctx, cont)

    reqs = [req([1, 2, 3], [4, 5]), req([1, 2, 3], [6]),  # shared: two endings, one of two tokens
            req([1, 2], [7]), req([1, 2], [8]),  # one-token endings: HFLM's own cache runs them once
            req([9], [4, 5]), req([9], [6, 7]),  # a one-token context has no prefix to share
            req([1, 2, 3, 4], [5, 6])]  # alone
    groups, rest = _shareable(reqs, max_length=100)
    assert groups == [[0, 1]] and sorted(rest) == [2, 3, 4, 5, 6]
    assert _shareable(reqs[:2], max_length=3) == ([], [0, 1])  # HFLM would truncate: left to it
    assert list(_chunks([[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]], rows=4)) == [[[0, 1, 2]], [[3, 4]], [[5, 6, 7, 8, 9]]]
    assert list(_chunks([[0, 1], [2, 3], [4]], rows=4)) == [[[0, 1], [2, 3]], [[4]]]


def test_each_task_is_timed_on_its_own(tiny_model):
    reqs = mixed_requests()
    _, _, lm = score(*tiny_model, reqs, shared=True)
    assert lm.scored["llmhpo_story"][0] == 20 and lm.scored["llmhpo_add"][0] == 12 and lm.scored["alone"][0] == 1
    assert all(seconds > 0 for _, seconds in lm.scored.values())


@pytest.mark.parametrize("shared", [False, True])
def test_auto_batch_search_runs_once_per_new_longest_length(tiny_model, monkeypatch, shared):
    from lm_eval.models.huggingface import HFLM

    searched = []
    monkeypatch.setattr(HFLM, "_detect_batch_size", lambda self, requests=None, pos=0: searched.append(1) or 16)
    long_first = instances(stories(2), "llmhpo_story") + instances(questions("add", 2), "llmhpo_add")
    plain, _, _ = score(*tiny_model, long_first, shared=False)
    answers, _, _ = score(*tiny_model, long_first, shared=shared, bs="auto")
    assert len(searched) == 1  # the questions are shorter: the stories' batch fits them
    assert [a for a, _ in answers] == pytest.approx([a for a, _ in plain], abs=1e-4)
    score(*tiny_model, long_first[8:] + long_first[:8], shared=shared, bs="auto")
    assert len(searched) == 3  # questions first, then longer stories: a new search


def test_batch_size_auto_is_a_fixed_batch_off_cuda(tiny_model):
    cfg = FinetuneConfig.from_sections({"eval": {"batch_size": "auto"}})
    assert cfg.eval.batch_size == "auto"
    assert batch_size(cfg.eval, tiny_model[0]) == AUTO_CPU_BATCH
    assert batch_size(EvalConfig(batch_size=4), tiny_model[0]) == 4
    for bad in ("big", 0, True, 2.5):
        with pytest.raises(ConfigError, match="batch_size"):
            FinetuneConfig.from_sections({"eval": {"batch_size": bad}})


@pytest.mark.slow
def test_evaluation_reports_requests_and_time_per_task_with_the_same_scores(tiny_model):
    """Through lm-eval: the builtin story task and a short-answer task, shared contexts on and off."""
    from llmhpo.objectives.finetune.evaluate import check_tasks, evaluate, task_manager

    base = EvalConfig(tasks=("llmhpo_story", "llmhpo_add"), objective="llmhpo_story/acc", limit=6)
    tm = task_manager(base)
    check_tasks(tm, base)
    model, tok = tiny_model
    on = evaluate(model, tok, tm, base)
    off = evaluate(model, tok, tm, EvalConfig(**{**base.__dict__, "shared_context": False}))
    assert on["llmhpo_story/requests"] == 24 and on["llmhpo_add/requests"] == 24
    assert on["llmhpo_story/seconds_per_request"] > 0 and on["llmhpo_add/seconds_per_request"] > 0
    for key in ("llmhpo_story/acc", "llmhpo_story/acc_norm", "llmhpo_add/acc"):
        assert on[key] == off[key]


@pytest.mark.slow
def test_shared_contexts_on_the_builtin_model():
    """SmolLM2 (fp32) on the builtin story task: plain HFLM's log-likelihoods, and the same choices."""
    from llmhpo.objectives.finetune.config import ModelConfig
    from llmhpo.objectives.finetune.model import load

    model, tok = load(ModelConfig(), "cpu")
    reqs = instances(stories(4), "llmhpo_story")
    plain, plain_tokens, _ = score(model, tok, reqs, shared=False)
    shared, shared_tokens, _ = score(model, tok, reqs, shared=True)
    for (a, greedy_a), (b, greedy_b) in zip(plain, shared):
        assert b == pytest.approx(a, abs=1e-4) and greedy_a == greedy_b
    best = [max(range(4), key=lambda k: answers[4 * d + k][0]) for answers in (plain, shared) for d in range(4)]
    assert best[:4] == best[4:]
    assert shared_tokens < 0.6 * plain_tokens
