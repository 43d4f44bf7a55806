"""lm-eval's HFLM as the tool scores with it: quiet (requests counted through ``progress``
instead of progress bars), timed per task, and, for multiple-choice questions, each shared
context computed once.

lm-eval hands the model all log-likelihood requests of all tasks in one call. ``ScoringLM``
scores them task by task, so that each task's requests and seconds are its own
(``scored``: task -> [requests, seconds]); the answers are the same.

Shared contexts: a HellaSwag-shaped question asks for the log-likelihood of k endings after
one context, and HFLM runs the whole context once per ending (its logits cache helps only
one-token endings). With ``shared_context`` on, the context's forward pass runs once and
each ending is scored from its KV cache (``past_key_values``), expanded over the endings:
the same log-likelihoods, up to float rounding, for (n_ctx + k * n_end) tokens of work
instead of k * (n_ctx + n_end).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import time
import warnings
from collections import defaultdict

from llmhpo.objectives import progress

_ScoringLM = None


def scoring_lm():
    """The HFLM subclass (made on first use: lm-eval is imported lazily)."""
    global _ScoringLM
    if _ScoringLM is None:
        _ScoringLM = _make()
    return _ScoringLM


def _make():
    from lm_eval.models.huggingface import HFLM

    class ScoringLM(HFLM):
        """HFLM over an in-memory model; ``shared_context`` switches shared contexts on."""

        def __init__(self, *args, shared_context: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.shared_context = shared_context
            self.scored: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
            self._fits: dict[int, int] = {}  # batch_size "auto": sequence length -> the batch found to fit

        def _detect_batch_size(self, requests=None, pos: int = 0):
            # lm-eval searches anew in each call, which is now one per task: a batch that fit
            # longer sequences fits these, so the search runs only for a new longest length
            length = len(requests[pos][1]) + len(requests[pos][2]) if requests else self.max_length
            longer = [n for n in self._fits if n >= length]
            if longer:
                return self._fits[min(longer)]
            self._fits[length] = super()._detect_batch_size(requests, pos)
            return self._fits[length]

        def loglikelihood(self, requests, disable_tqdm: bool = True):
            return self._per_task(HFLM.loglikelihood, requests, len(requests))

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = True):
            # its windows are counted, and known only as they are made
            return self._per_task(HFLM.loglikelihood_rolling, requests, None)

        def generate_until(self, requests, disable_tqdm: bool = True):
            return self._per_task(HFLM.generate_until, requests, len(requests))

        def _per_task(self, method, requests, total):
            """``method`` on each task's requests in turn, timed; the answers in request order."""
            _Scored.start(total)
            by_task: dict[str, list[int]] = defaultdict(list)
            for i, r in enumerate(requests):
                by_task[str(r.task_name)].append(i)
            out = [None] * len(requests)
            # lm-eval prints its automatic batch size search to stdout
            hush = contextlib.redirect_stdout(io.StringIO()) if self.batch_size == "auto" else contextlib.nullcontext()
            with hush:
                for task, idx in by_task.items():
                    t0 = time.perf_counter()
                    answers = method(self, [requests[i] for i in idx], disable_tqdm=True)
                    self.scored[task][0] += len(idx)
                    self.scored[task][1] += time.perf_counter() - t0
                    for i, a in zip(idx, answers):
                        out[i] = a
            return out

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = True, override_bs=None):
            # loglikelihood_rolling calls this with disable_tqdm=False hard-coded
            if not self.shared_context or self.backend != "causal" or any(r[0] is None for r in requests):
                # (a rolling log-likelihood's windows, no request string each, share no context)
                return super()._loglikelihood_tokens(requests, disable_tqdm=True, override_bs=override_bs)
            groups, rest = _shareable(requests, self.max_length)
            out = [None] * len(requests)
            if rest:
                answers = super()._loglikelihood_tokens([requests[i] for i in rest], disable_tqdm=True,
                                                        override_bs=override_bs)
                for i, a in zip(rest, answers):
                    out[i] = a
            if groups:
                bs = override_bs or self.batch_size
                if bs == "auto":  # the longest request sets the size; ours are shorter
                    bs = self._detect_batch_size([max(requests, key=lambda r: len(r[1]) + len(r[2]))], 0)
                for chunk in _chunks(groups, int(bs)):
                    try:
                        _score_shared(self, requests, chunk, out)
                    except (AttributeError, TypeError, NotImplementedError) as e:
                        warnings.warn(f"[eval] shared_context: this model's KV cache cannot be shared ({e}); "
                                      "scoring each ending with its context; set shared_context = false")
                        self.shared_context = False
                        return self._loglikelihood_tokens(requests, override_bs=override_bs)
            return out

    return ScoringLM


def _score_shared(lm, requests, chunk: list[list[int]], out: list) -> None:
    """Score the requests of ``chunk`` (groups of request indices, one context each) into
    ``out``: one pass over the contexts, one over every ending from their KV cache."""
    import lm_eval.models.huggingface as hf
    import torch
    import torch.nn.functional as F

    ctxs = [requests[idx[0]][1] for idx in chunk]
    rows = [(g, i) for g, idx in enumerate(chunk) for i in idx]
    conts = [requests[i][2] for _, i in rows]
    pre, pre_mask, end, end_mask = _inputs(ctxs, rows, conts)
    which = torch.tensor([g for g, _ in rows])
    start = torch.tensor([len(ctxs[g]) - 1 for g, _ in rows])
    dev, model = lm.device, lm.model
    cache_name, last_only = _forward_args(model)
    with torch.no_grad(), torch.autocast(device_type=dev.type, dtype=lm.mixed_precision_dtype,
                                         enabled=lm.mixed_precision_dtype is not None):
        out_pre = model(input_ids=pre.to(dev), attention_mask=pre_mask.to(dev),
                        position_ids=(pre_mask.cumsum(-1) - 1).clamp(min=0).to(dev), use_cache=True, **last_only)
        cache = getattr(out_pre, cache_name)
        cache.batch_select_indices(which.to(dev))  # each context's cache, once per ending
        logits = model(input_ids=end.to(dev), attention_mask=torch.cat([pre_mask[which], end_mask], 1).to(dev),
                       position_ids=(start[:, None] + torch.arange(end.shape[1])).to(dev),
                       use_cache=False, **{cache_name: cache}).logits
    logp = F.log_softmax(logits, dim=-1, dtype=lm.softmax_dtype)  # (rows, S, vocab)
    bar = hf.tqdm(total=len(rows), disable=True)  # counts the requests while evaluate's counting bar is in
    for r, ((_, i), cont) in enumerate(zip(rows, conts)):
        lp = logp[r, :len(cont)]
        target = torch.tensor(cont, device=lp.device)
        answer = (float(lp.gather(1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
        out[i] = answer
        lm.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
        bar.update(1)
    bar.close()


def _inputs(ctxs: list[list[int]], rows: list[tuple[int, int]], conts: list[list[int]]):
    """(prefixes (n_ctx, P): each context but its last token, left-padded; their mask;
    endings (n_rows, S): the context's last token, then the continuation but its last token,
    right-padded; their mask). Logit t of an ending's row predicts its continuation's token t."""
    import torch

    P, S = max(len(c) for c in ctxs) - 1, max(len(c) for c in conts)
    pre = torch.zeros((len(ctxs), P), dtype=torch.long)
    pre_mask = torch.zeros((len(ctxs), P), dtype=torch.long)
    for g, c in enumerate(ctxs):
        pre[g, P - len(c) + 1:] = torch.tensor(c[:-1])
        pre_mask[g, P - len(c) + 1:] = 1
    end = torch.zeros((len(rows), S), dtype=torch.long)
    end_mask = torch.zeros((len(rows), S), dtype=torch.long)
    for r, ((g, _), cont) in enumerate(zip(rows, conts)):
        end[r, :len(cont)] = torch.tensor([ctxs[g][-1]] + cont[:-1])
        end_mask[r, :len(cont)] = 1
    return pre, pre_mask, end, end_mask


def _shareable(requests, max_length: int) -> tuple[list[list[int]], list[int]]:
    """(groups of request indices that share a context worth sharing, the other indices).

    Worth sharing: two endings or more, one of them longer than a token (HFLM's own cache
    already runs one-token endings once), a context of two tokens or more, nothing that
    HFLM would truncate."""
    by_ctx: dict[tuple, list[int]] = defaultdict(list)
    for i, (_, ctx, _) in enumerate(requests):
        by_ctx[tuple(ctx)].append(i)
    groups, rest = [], []
    for ctx, idx in by_ctx.items():
        longest = max(len(requests[i][2]) for i in idx)
        if len(idx) > 1 and longest > 1 and len(ctx) > 1 and len(ctx) + longest <= max_length + 1:
            groups.append(idx)
        else:
            rest.extend(idx)
    return groups, rest


def _chunks(groups: list[list[int]], rows: int):
    """Groups, longest contexts first, packed into chunks of at most ``rows`` endings (a
    larger group alone)."""
    chunk: list[list[int]] = []
    for idx in groups:
        if chunk and sum(map(len, chunk)) + len(idx) > rows:
            yield chunk
            chunk = []
        chunk.append(idx)
    if chunk:
        yield chunk


def _forward_args(model) -> tuple[str, dict]:
    """(the name of the model's KV cache argument and output: ``cache`` since transformers 5,
    ``past_key_values`` before; ``logits_to_keep=1`` where the model takes it, as the prefix
    pass needs its cache, not its logits over the vocabulary)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return ("cache" if "cache" in params else "past_key_values",
            {"logits_to_keep": 1} if "logits_to_keep" in params else {})


class _Scored:
    """The requests HFLM has scored in its current call (all the log-likelihood requests of
    every task, or all the generations), counted through its progress bars (``counting_bar``)."""

    done = 0
    total: int | None = None

    @classmethod
    def start(cls, total: int | None) -> None:
        cls.done, cls.total = 0, total
        progress("scoring", 0, total, "requests")

    @classmethod
    def update(cls, n: int = 1) -> None:
        cls.done += n
        progress("scoring", cls.done, cls.total, "requests")

    def close(self) -> None:
        pass


def counting_bar(iterable=None, *args, **kwargs):
    """Stands in for tqdm in lm-eval's HFLM: a bar over requests (``total=``) counts them in
    ``_Scored``; a bar over an iterable (the documents a rolling log-likelihood cuts into
    windows) is the iterable itself."""
    return _Scored() if iterable is None else iterable
