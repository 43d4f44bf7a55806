"""An analytic estimate of the peak GPU memory of one LoRA trial, from the model's shapes and
the trial's knobs, for ``llmhpo check``.

Activations follow the accounting of Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models" (section 4.1: the bytes each operation saves for
backward, per token per layer; 34h + 5as/h for a GPT layer in 16-bit), redone for a Llama-style
block (RMSNorm, grouped-query attention, SwiGLU MLP) under LoRA. A frozen linear layer saves
nothing for backward (no weight gradient is needed, and its input gradient needs only the
weight); each LoRA branch saves its own input (after dropout, and the dropout mask). With a
fused attention kernel (sdpa, flash_attention_2) the a*s attention-score term is gone; with
"eager" it is back. With gradient checkpointing each layer keeps only its input, and one layer
is recomputed at a time during backward. Per token per layer, in bytes (16-bit, ``h`` hidden,
``q`` = heads x head_dim, ``i`` intermediate):

    two RMSNorms (fp32 input)                    8h
    attention: q, k, v (kv heads repeated), out  8q  (flash_attention_2: 4q + 4kv, no repeat)
    SwiGLU: gate, silu(gate), up                 6i
    each LoRA module with input width d          3d  (2d input + 1d dropout mask; 2d without dropout)

The loss adds the logits: bf16 logits, their fp32 copy and log-softmax during forward, then
the saved log-softmax, its gradient and the input gradient at the start of backward: 12 bytes
per token per vocabulary entry at the peak. Every position is counted as a response: an
upper bound, since training applies the head to the response positions only
(``train.response_loss``; prompts often are half the tokens). Checked against the measured H200 peaks of
docs/benchmarks.md (Llama-3.2-1B shapes, r 16 on q/k/v/o: 14.4 and 50.4 GiB allocated; this
estimate says 14.7 and 51.9 before the overhead; those runs computed every position's logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

GIB = 2**30
#: CUDA context, cuBLAS workspaces and the caching allocator's slack: a constant plus a fraction
OVERHEAD_BYTES = int(0.6 * GIB)
OVERHEAD_FRACTION = 0.05
#: bitsandbytes NF4: 4 bits a weight, one 8-bit absmax per 64 weights, one fp32 constant per 256 of
#: those (double quantisation)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
INT8_BYTES = 1.0  # LLM.int8: one byte a weight (+ one fp32 scale per output row, counted apart)

LLAMA_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shapes:
    """What the estimate needs of a decoder-only model's configuration."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    head_dim: int = 0  # 0: hidden // heads

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    def linears(self) -> dict[str, tuple[int, int]]:
        """The linear layers of one block: name -> (in features, out features)."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def params(self) -> int:
        """All parameters: embeddings, blocks (linears and two norms), final norm, lm_head."""
        block = sum(a * b for a, b in self.linears().values()) + 2 * self.hidden
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * block + self.hidden


#: the shapes of popular models, used when their config.json cannot be had (gated, no network)
SHAPES: dict[str, Shapes] = {
    "meta-llama/Llama-3.2-1B": Shapes(2048, 16, 32, 8, 8192, 128256, True),
    "meta-llama/Llama-3.2-3B": Shapes(3072, 28, 24, 8, 8192, 128256, True),
    "meta-llama/Llama-3.1-8B": Shapes(4096, 32, 32, 8, 14336, 128256, False),
    "meta-llama/Meta-Llama-3-8B": Shapes(4096, 32, 32, 8, 14336, 128256, False),
    "meta-llama/Llama-2-7b-hf": Shapes(4096, 32, 32, 32, 11008, 32000, False),
    "mistralai/Mistral-7B-v0.1": Shapes(4096, 32, 32, 8, 14336, 32000, False),
    "mistralai/Mistral-7B-v0.3": Shapes(4096, 32, 32, 8, 14336, 32768, False),
    "Qwen/Qwen2.5-0.5B": Shapes(896, 24, 14, 2, 4864, 151936, True),
    "Qwen/Qwen2.5-1.5B": Shapes(1536, 28, 12, 2, 8960, 151936, True),
    "Qwen/Qwen2.5-7B": Shapes(3584, 28, 28, 4, 18944, 152064, False),
    "google/gemma-2-2b": Shapes(2304, 26, 8, 4, 9216, 256000, True, head_dim=256),
    "HuggingFaceTB/SmolLM2-135M": Shapes(576, 30, 9, 3, 1536, 49152, True),
}
_SUFFIXES = ("-instruct", "-it", "-chat-hf", "-chat")


def table_shapes(name: str) -> Shapes | None:
    """The table's shapes for a hub id (an -Instruct, -it or -chat variant has its base's)."""
    lower = {k.lower(): v for k, v in SHAPES.items()}
    key = name.lower()
    for suffix in ("",) + _SUFFIXES:
        if suffix == "" or key.endswith(suffix):
            stem = key[: len(key) - len(suffix)] if suffix else key
            if stem in lower:
                return lower[stem]
    return None


def shapes_from_config(config) -> Shapes:
    """Shapes from a transformers PretrainedConfig (the text part of a multimodal one)."""
    c = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = c.num_attention_heads
    return Shapes(hidden=c.hidden_size, layers=c.num_hidden_layers, heads=heads,
                  kv_heads=getattr(c, "num_key_value_heads", None) or heads,
                  intermediate=getattr(c, "intermediate_size", None) or 4 * c.hidden_size,
                  vocab=c.vocab_size, tied=bool(getattr(c, "tie_word_embeddings", False)),
                  head_dim=getattr(c, "head_dim", None) or 0)


@dataclass(frozen=True)
class Knobs:
    """The settings of one trial that decide its memory."""

    lora_rank: int = 8
    batch_size: int = 8  # the micro-batch (batch_size of [train]; grad_accum does not count)
    max_seq_len: int = 64
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # or ("all-linear",)
    dtype: str = "bfloat16"  # auto is bf16 on a GPU
    quantization: str = "none"  # none | 4bit | 8bit
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    packing: bool = False  # the micro-batch as one padding-free row (the same tokens at most)
    use_dora: bool = False
    lora_dropout: float = 0.05
    gpus_per_trial: float = 1.0  # k >= 1: data-parallel over k GPUs (the micro-batch split)

    @property
    def per_gpu_batch(self) -> int:
        k = int(self.gpus_per_trial) if self.gpus_per_trial >= 1 else 1
        return math.ceil(self.batch_size / k)

    def describe(self) -> str:
        parts = [f"r {self.lora_rank}", f"batch {self.batch_size}", f"{self.max_seq_len} tokens"]
        if self.use_dora:
            parts.append("DoRA")
        if self.quantization != "none":
            parts.append(self.quantization)
        if self.gradient_checkpointing:
            parts.append("gradient checkpointing")
        return ", ".join(parts)


@dataclass(frozen=True)
class Estimate:
    """Peak GPU memory of one trial on one GPU, in bytes, by part."""

    weights: int  # the frozen base model (quantised: with its 16-bit working copies)
    lora: int  # adapter weights, their gradients and AdamW's two moments (fp32), bf16 copies
    activations: int  # what the blocks save for backward (a recomputed layer with checkpointing)
    logits: int  # the loss's logits at their peak
    overhead: int  # CUDA context, workspaces, allocator slack
    tokens: int  # tokens of the per-GPU micro-batch

    @property
    def allocated(self) -> int:
        """What torch.cuda.max_memory_allocated should show: everything but the overhead."""
        return self.weights + self.lora + self.activations + self.logits

    @property
    def total(self) -> int:
        return self.allocated + self.overhead

    def describe(self) -> str:
        parts = ", ".join(f"{name} {getattr(self, key) / GIB:.1f}" for name, key in
                          (("weights", "weights"), ("LoRA+AdamW", "lora"), ("activations", "activations"),
                           ("logits", "logits"), ("overhead", "overhead")))
        return f"about {self.total / GIB:.1f} GiB per GPU ({parts})"


def targets(shapes: Shapes, target_modules) -> dict[str, tuple[int, int]]:
    """The block's linear layers LoRA adapts: name -> (in, out). "all-linear" is all of them; a
    name the Llama layout does not have counts as a hidden x hidden layer."""
    lin = shapes.linears()
    names = tuple(target_modules)
    if names in (("all-linear",), "all-linear"):
        return lin
    return {n: lin.get(n, (shapes.hidden, shapes.hidden)) for n in names}


def weight_bytes(shapes: Shapes, knobs: Knobs) -> int:
    """The frozen model: block linears at the quantised width, everything else 16-bit (or fp32)."""
    width = 4 if knobs.dtype == "float32" else 2
    lin = shapes.linears()
    block_linear = shapes.layers * sum(a * b for a, b in lin.values())
    rest = shapes.params() - block_linear
    if knobs.quantization not in ("4bit", "8bit"):
        return block_linear * width + rest * width
    if knobs.quantization == "4bit":
        quantised = block_linear * NF4_BYTES
    else:
        quantised = block_linear * INT8_BYTES + 4 * shapes.layers * sum(b for _, b in lin.values())
    # peft's prepare_model_for_kbit_training casts what is not quantised (embeddings, lm_head,
    # norms) to fp32; autocast makes a 16-bit copy of lm_head for its matmul, and each quantised
    # layer is de-quantised to 16-bit for its own: one such buffer of each is live
    buffers = 2 * shapes.vocab * shapes.hidden + 2 * max(a * b for a, b in lin.values())
    return int(quantised + 4 * rest + buffers)


def lora_params(shapes: Shapes, knobs: Knobs) -> int:
    """r x (in + out) per adapted layer per block; DoRA adds a magnitude vector of width out."""
    per_block = sum(knobs.lora_rank * (a + b) + (b if knobs.use_dora else 0)
                    for a, b in targets(shapes, knobs.target_modules).values())
    return shapes.layers * per_block


def layer_activation_bytes(shapes: Shapes, knobs: Knobs) -> int:
    """Bytes one block saves for backward per token (see the module docstring)."""
    a = 4 if knobs.dtype == "float32" else 2  # activation width
    h, q, i = shapes.hidden, shapes.q_dim, shapes.intermediate
    # q, k, v and the output; sdpa with a padding mask and eager repeat k and v to every head
    attention = (2 * q + 2 * shapes.kv_dim) if knobs.attn_implementation == "flash_attention_2" else 4 * q
    base = 8 * h + a * attention + 3 * a * i
    if knobs.attn_implementation == "eager":  # softmax output (fp32) and its 16-bit copy, per head per key
        keys = knobs.per_gpu_batch * knobs.max_seq_len if knobs.packing else knobs.max_seq_len
        base += (4 + a) * shapes.heads * keys
    lora = 0
    for d_in, d_out in targets(shapes, knobs.target_modules).values():
        lora += (a + (1 if knobs.lora_dropout > 0 else 0)) * d_in + a * knobs.lora_rank
        if knobs.use_dora:  # the base output and the LoRA output are both kept to rescale
            lora += 2 * a * d_out
    return base + lora


def estimate(shapes: Shapes, knobs: Knobs) -> Estimate:
    """The peak memory of one trial with ``knobs`` on a model of ``shapes``, per GPU."""
    tokens = knobs.per_gpu_batch * knobs.max_seq_len
    n_lora = lora_params(shapes, knobs)
    # fp32 weight, gradient and two AdamW moments, the autocast 16-bit copy; with k GPUs one more
    # fp32 gradient bucket for the all-reduce
    lora = n_lora * (16 + 2 + (4 if knobs.gpus_per_trial >= 2 else 0))
    if knobs.use_dora:  # DoRA's weight norm builds one adapted layer's full weight, fp32
        lora += 4 * max(a * b for a, b in targets(shapes, knobs.target_modules).values())
    layer = layer_activation_bytes(shapes, knobs)
    # the residual stream is fp32 in an fp32 model and after peft's kbit preparation (fp32 embeddings)
    a = 4 if knobs.dtype == "float32" or knobs.quantization != "none" else 2
    if knobs.gradient_checkpointing:
        activations = tokens * (shapes.layers * a * shapes.hidden + layer)
    else:
        activations = tokens * shapes.layers * layer
    if knobs.attn_implementation != "flash_attention_2":  # the boolean 4-D mask: per row, or the packed row's
        activations += tokens ** 2 if knobs.packing else tokens * knobs.max_seq_len
    logits = tokens * shapes.vocab * 12  # backward's start: saved log-softmax, its gradient, the input gradient
    weights = weight_bytes(shapes, knobs)
    allocated = weights + lora + activations + logits
    overhead = OVERHEAD_BYTES + int(OVERHEAD_FRACTION * allocated)
    return Estimate(weights, lora, activations, logits, overhead, tokens)


def suggestions(shapes: Shapes, knobs: Knobs, budget: int, searched: frozenset = frozenset()) -> list[str]:
    """Changes that bring ``knobs`` under ``budget`` bytes, least costly first, each with the
    estimate it would give: checkpointing (same results, ~1/3 more compute), a smaller
    micro-batch (same effective batch through grad_accum), 4-bit weights, both switches
    together, shorter sequences. ``searched``: knobs of [space] (their upper bound is lowered)."""
    def total(k: Knobs) -> int:
        return estimate(shapes, k).total

    def gib(k: Knobs) -> str:
        return f"about {total(k) / GIB:.1f} GiB"

    def where(key: str) -> str:
        return f"[space] {key} high =" if key in searched else f"[train] {key} ="

    def halve(key: str, low: int, base: Knobs) -> Knobs | None:
        v = getattr(knobs, key) // 2
        while v >= low and total(replace(base, **{key: v})) > budget:
            v //= 2
        return replace(base, **{key: v}) if v >= low else None

    ckpt = "set [train] gradient_checkpointing = true"
    four = 'set [model] quantization = "4bit"'
    out, switches = [], {}
    if not knobs.gradient_checkpointing:
        switches[ckpt] = replace(knobs, gradient_checkpointing=True)
    if knobs.quantization != "4bit":
        switches[four] = replace(knobs, quantization="4bit")
    both = replace(knobs, gradient_checkpointing=True, quantization="4bit")
    if ckpt in switches and total(switches[ckpt]) <= budget:
        out.append(f"{ckpt} ({gib(switches[ckpt])})")
    smaller = halve("batch_size", 1, knobs)
    if smaller is not None:
        same = "" if "batch_size" in searched else \
            f" with grad_accum x {knobs.batch_size // smaller.batch_size} (the same effective batch)"
        out.append(f"set {where('batch_size')} {smaller.batch_size}{same} ({gib(smaller)})")
    if four in switches and total(switches[four]) <= budget:
        out.append(f"{four} ({gib(switches[four])})")
    if len(switches) == 2 and not any(total(k) <= budget for k in switches.values()) and total(both) <= budget:
        out.append(f"{ckpt} and {four[4:]} ({gib(both)})")
    shorter = halve("max_seq_len", 64, knobs)
    if shorter is not None:
        out.append(f"set {where('max_seq_len')} {shorter.max_seq_len} ({gib(shorter)})")
    if not out:
        last = halve("batch_size", 1, both)
        out.append(f"{ckpt}, {four[4:]} and {where('batch_size')} {last.batch_size} ({gib(last)})"
                   if last is not None else
                   f"even with gradient checkpointing, 4-bit weights and batch_size 1 it needs "
                   f"{gib(replace(both, batch_size=1))}: use a smaller model or a larger GPU")
    return out


# ---------------------------------------------------------------- from a study's config
def model_shapes(model_cfg) -> tuple[Shapes | None, str]:
    """(shapes, where they came from) for [model]: the model's config.json (a local folder, the
    builtin model, the Hugging Face cache, the hub when reachable), else the table above; (None,
    why) when neither has them."""
    from pathlib import Path

    from transformers import AutoConfig

    from llmhpo.objectives.finetune import model as model_lib

    try:
        where, gguf = model_lib.resolve(model_cfg)
    except Exception as e:  # preflight reports the model's own problem; say why there is no estimate
        return None, f"the model cannot be found ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    kwargs = {"revision": model_cfg.revision} if model_cfg.revision else {}
    if gguf:
        kwargs["gguf_file"] = gguf
    attempts = [{}] if Path(where).is_dir() else [{"local_files_only": True}]
    if not Path(where).is_dir() and table_shapes(where) is None and not model_lib.hub_offline():
        attempts.append({})  # unknown to the table: ask the hub
    for extra in attempts:
        try:
            return shapes_from_config(AutoConfig.from_pretrained(where, **kwargs, **extra)), "config.json"
        except Exception:
            continue
    known = table_shapes(where)
    if known is not None:
        return known, "llmhpo's table of model shapes (config.json not in the Hugging Face cache)"
    return None, f"no config.json for {where} here and it is not in llmhpo's table of model shapes"


def demanding_knobs(fc, space=None, gpus_per_trial: float = 1.0) -> Knobs:
    """The configuration of the study that needs the most memory: the largest lora_rank,
    batch_size and max_seq_len the space allows (else the [train] values), DoRA and dropout on
    if searchable, checkpointing off if searchable."""
    tr, md = fc.train, fc.model
    searched = {v.name: v for v in space} if space is not None else {}

    def top(name: str, fixed):
        v = searched.get(name)
        if v is None:
            return fixed
        if hasattr(v, "high"):
            return v.high
        numeric = [c for c in v.choices if isinstance(c, (int, float))]
        return max(numeric) if numeric else fixed

    def may(name: str, fixed: bool, worst: bool) -> bool:
        v = searched.get(name)
        return worst if v is not None and worst in getattr(v, "choices", ()) else fixed

    targets_ = md.target_modules if isinstance(md.target_modules, tuple) else (md.target_modules,)
    dropout = top("lora_dropout", tr.lora_dropout)
    return Knobs(lora_rank=int(top("lora_rank", tr.lora_rank)), batch_size=int(top("batch_size", tr.batch_size)),
                 max_seq_len=int(top("max_seq_len", tr.max_seq_len)), target_modules=targets_,
                 dtype="float32" if md.dtype == "float32" else "bfloat16",
                 quantization=getattr(md, "quantization", "none") or "none",
                 attn_implementation=getattr(md, "attn_implementation", None) or "sdpa",
                 gradient_checkpointing=may("gradient_checkpointing", bool(getattr(tr, "gradient_checkpointing", False)),
                                            False),
                 packing=bool(getattr(tr, "packing", False)),
                 use_dora=may("use_dora", bool(getattr(tr, "use_dora", False)), True),
                 lora_dropout=float(dropout), gpus_per_trial=gpus_per_trial or 1.0)


def memory_check(fc, space, gpus: list[tuple[str, int]], gpus_per_trial: float = 1.0) -> tuple[list[str], list[str]]:
    """(lines, problems): the estimate of the study's most demanding configuration, and one
    problem per GPU of ``gpus`` ((name such as "GPU 0 (NVIDIA A10" or "", total bytes)) it
    does not fit, with the changes that
    would make it fit. A fraction ``gpus_per_trial`` < 1 leaves each trial that share of a GPU."""
    shapes, source = model_shapes(fc.model)
    if shapes is None:
        return [f"memory: no estimate: {source}"], []
    knobs = demanding_knobs(fc, space, gpus_per_trial)
    est = estimate(shapes, knobs)
    what = f"the most demanding configuration ({knobs.describe()})"
    split = f", micro-batch {knobs.per_gpu_batch} on each of {int(knobs.gpus_per_trial)} GPUs" \
        if knobs.gpus_per_trial >= 2 else ""
    lines = [f"memory: {what} needs {est.describe()}{split}; shapes from {source}"]
    share = gpus_per_trial if 0 < gpus_per_trial < 1 else 1.0
    problems = []
    searched = frozenset(v.name for v in space) if space is not None else frozenset()
    for label, total in gpus:
        budget = int(total * share)
        size = f"{total / GIB:.1f} GiB" + (f", {share:g} of it per trial" if share < 1 else "")
        room = f"{label}, {size})" if label else f"a GPU of {size}"
        if est.total <= budget:
            lines.append(f"memory: {room}: fits ({(budget - est.total) / GIB:.1f} GiB to spare)")
        else:
            fixes = suggestions(shapes, knobs, budget, searched)
            verb = "do" if label.startswith("GPUs") else "does"
            problems.append(f"memory: {what} needs {est.describe()}; {room} {verb} not fit it: " + ", or ".join(fixes))
    return lines, problems
