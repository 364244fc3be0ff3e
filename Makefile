# tcl — regenerate the paper's results from one command.
#
#   make all            environment, data, 27 trainings, evaluation, every notebook, table and figure
#   make test           the whole pipeline with PROFILE=smoke, then pytest (the test command CI runs)
#   make data           only the cohort, its cache and its draws (what notebook 01 asks for when
#                       they are missing)
#   make env            only build .venv/ (torch 2.13 + requirements.lock + this package)
#   make lock           regenerate requirements.lock from pyproject.toml (uv)
#
# Knobs:
#   PROFILE=auto|paper|quick|smoke   auto = paper when CUDA is available, else quick
#   DATA=path/to/manifest.csv        a real cohort instead of the synthetic one; make stops
#                                    when validate finds series misregistered against T1C
#   ACCEPT_MISREGISTRATION=1         ...and goes on with them as they are
#   PYTHON=/path/to/python           use an existing environment instead of .venv/
#   DRAWS=0 | DRAWS="0 1"            train and evaluate only these of the three draws (a quick full check)
#   JOBS=auto|N  THREADS=auto|k      N trainings at once, k CPU threads each; auto: one thread per
#                                    training and one training per core (up to 4) on CPU; on CUDA
#                                    two side by side (half the cores each) on a card of 32 GiB or
#                                    more, else one on all cores (tcl.pipeline.plan.parallel_plan)
#   make -j N all THREADS=k          the same with make's own job slots (k·N ≤ cores)
#   make -j N all GPUS=0,1,...       N trainings in parallel, each on a GPU of the list to itself
#   SAVE_WEIGHTS="efmt mmoe" | all   also keep these networks (proposed is always kept)
#   SEED=N                           train with another seed (results/<profile>-seedN)
#   CPU_ISA=native | avx2            avx2: CPU kernels limited to AVX2 (ATen, oneDNN, MKL), so
#                                    that machines with and without AVX-512 compute the same
#                                    sums; 75 % slower on an AVX-512 CPU (docs/reproducing.md)
#   LAUNCH="srun --gres=gpu:1 ..."   run every training as a Slurm job (or, inside an allocation,
#                                    a job step): the command goes in front of each training's
#                                    notebook; Slurm picks the GPU (docs/cluster.md)
#   LAUNCH_CPU="srun -c 16 ..."      the same for the CPU-heavy data steps (synth, preprocess,
#                                    radiomics); empty: they run where make runs
SHELL := /bin/bash
.DELETE_ON_ERROR:
.SECONDARY:

VENV    ?= .venv
PYTHON  ?= $(VENV)/bin/python
TORCH   ?= torch==2.13.0
BOOTSTRAP_PYTHON ?= python3
PROFILE ?= auto
DATA    ?=
# CPU threads per training; 0 = all cores. `make all` chooses when not given (see JOBS).
THREADS ?= 0
# Trainings at once under `make all`: auto = tcl.pipeline.plan.parallel_plan (2 × 1 thread on 2 cores).
JOBS    ?= auto
# The draws trained and evaluated; splits.json always holds all three.
DRAWS   ?= 0 1 2
# The trainings' seed; empty = the profile's (666, the paper's). Another seed writes to
# results/<profile>-seed<N> and figures/<profile>-seed<N> and leaves the README alone.
SEED    ?=
ACCEPT_MISREGISTRATION ?=
# GPU ids the trainings share out, one per training at a time (tcl.pipeline.run_notebook --gpus); empty =
# every training sees all GPUs and uses the first.
GPUS    ?=
# A command that runs a training elsewhere, e.g. "srun --gres=gpu:1 --cpus-per-task=8": make
# stays the graph of what is missing, the scheduler runs each training (job name
# tcl-<profile>-<config>-draw<K>, through srun's SLURM_JOB_NAME). LAUNCH_CPU: the same for the
# data steps. Results must then sit on a filesystem the nodes share (docs/cluster.md).
LAUNCH  ?=
LAUNCH_CPU ?=
# Configurations whose trained networks are kept (model.safetensors + model.json, for tcl
# predict); the proposed one always is (06 and 07 use it). At paper width a network is 0.8 GB.
SAVE_WEIGHTS ?=

# The instruction sets the CPU kernels may use; tcl.training.train records the ones used in run.json.
CPU_ISA ?= native
ifeq ($(CPU_ISA),avx2)
  export ATEN_CPU_CAPABILITY := avx2
  export ONEDNN_MAX_CPU_ISA := AVX2
  export MKL_CBWR := AVX2
else ifneq ($(CPU_ISA),native)
  $(error CPU_ISA must be native or avx2, got '$(CPU_ISA)')
endif

CONFIGS := efmt mfmt mmoe maml baseline1 baseline2 baseline3 baseline4 proposed
ALL_DRAWS := 0 1 2
ifneq ($(or $(filter-out $(ALL_DRAWS),$(DRAWS)),$(if $(strip $(DRAWS)),,empty)),)
$(error DRAWS must list draws among $(ALL_DRAWS) (splits.json holds three), got '$(DRAWS)')
endif

.PHONY: all data cohort pipeline env lock test lint clean-env announce FORCE gpu-check gpu-wheels

# ---------------------------------------------------------------- environment
env: $(VENV)/.installed

# Rebuilt when the declared or locked dependencies change. torch comes first, at the exact
# version TORCH names and without its dependencies (the build the platform's index offers: the
# CPU one here, a CUDA one from PyPI on a GPU machine); then every other package at the exact
# version and hash requirements.lock gives, torch's own dependencies included; then this package
# alone. pyproject.toml keeps lower bounds for installing tcl into an environment of your own.
LOCK ?= requirements.lock
$(VENV)/.installed: pyproject.toml $(LOCK)
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ]; then \
	  set -e; \
	  test -x $(VENV)/bin/python || $(BOOTSTRAP_PYTHON) -m venv $(VENV); \
	  $(VENV)/bin/python -m pip install --quiet --upgrade pip; \
	  $(VENV)/bin/python -m pip install --quiet --no-deps "$(TORCH)"; \
	  $(VENV)/bin/python -m pip install --quiet --require-hashes -r $(LOCK); \
	  $(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .; \
	  $(VENV)/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

# requirements.lock: the whole dependency tree of pyproject.toml (with the dev extra) resolved by
# uv for Python 3.11 and later (markers where 3.12 needs other versions), with hashes. torch is
# resolved as the CPU build of the TORCH version, so that the CUDA libraries of PyPI's Linux build
# stay out, and then left out of the file (TORCH installs it). LOCK_TORCH_FROM: where uv finds
# that build (the PyTorch CPU index; a folder of wheels with --find-links). Needs uv in PYTHON
# (the dev extra has it).
LOCK_TORCH_FROM ?= --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
lock:
	@echo "$(TORCH)+cpu" > $(LOCK).torch && trap 'rm -f $(LOCK).torch' EXIT; \
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	  --generate-hashes --override $(LOCK).torch $(LOCK_TORCH_FROM) --no-emit-package torch \
	  --custom-compile-command "make lock" --quiet -o $(LOCK)

# ---------------------------------------------------------------- entry points
# The profile, the trainings at once and their threads are resolved after the environment exists
# (auto needs torch to look for CUDA). A THREADS or make -j given by the user is kept.
THREADS_GIVEN = $(if $(filter command line environment,$(origin THREADS)),$(THREADS),auto)
all: env
	@plan=$$($(PYTHON) -m tcl.pipeline.plan plan $(PROFILE) $(JOBS) $(THREADS_GIVEN) "$$MAKEFLAGS" $(if $(strip $(LAUNCH)),--launched)) || exit 1; \
	read profile jobs threads jflag <<< "$$plan"; \
	echo "tcl: $$jobs training(s) at once, $$threads CPU thread(s) each (0 = all cores)$(if $(strip $(LAUNCH)), through: $(LAUNCH))"; \
	$(MAKE) --no-print-directory $$([ "$$jflag" = - ] || echo $$jflag) pipeline PROFILE=$$profile THREADS=$$threads DATA="$(DATA)" DRAWS="$(DRAWS)" SEED="$(SEED)"

# The data steps alone; notebook 01 runs this when it is opened on a cohort not yet built, so
# that the steps and their settings live here only.
data: env
	@plan=$$($(PYTHON) -m tcl.pipeline.plan plan $(PROFILE) auto auto "") || exit 1; \
	read profile _ <<< "$$plan"; \
	$(MAKE) --no-print-directory cohort PROFILE=$$profile DATA="$(DATA)"

# The suite on every core (pytest-xdist), each test file on one worker so that its module
# fixtures (a registered cohort, say) are built once, and the files that share a session fixture
# (the trained network) on one worker too (tests/conftest.py, SHARED_WORKER). `python -m pytest
# tests/x/test_y.py` alone runs serially as usual.
# The smoke pipeline runs first: tests/test_slurm.py takes it as its reference.
test: env
	$(MAKE) --no-print-directory -j2 pipeline PROFILE=smoke THREADS=1
	TCL_SMOKE_REFERENCE=$(CURDIR) $(PYTHON) -m pytest -q -n auto --dist loadfile

lint: env
	$(PYTHON) -m ruff check tcl tests tools
	$(PYTHON) -m ruff format --check tcl tests tools

clean-env:
	rm -rf $(VENV)

# ---------------------------------------------------------------- the pipeline (PROFILE resolved)
ifneq ($(filter pipeline announce cohort,$(MAKECMDGOALS)),)
ifeq ($(PROFILE),auto)
$(error pipeline needs a resolved PROFILE; run `make all`)
endif
# Numbers come from the profile in tcl/config.py, never from here.
comma := ,
profile_get = $(shell $(PYTHON) -c "from tcl.config import get_profile as g; p = g('$(PROFILE)'); print($(1))")
SIZE        := $(call profile_get,*p.size)
SIZE_NAME   := $(subst $() ,x,$(SIZE))
ifeq ($(DATA),)
  COHORT      := $(if $(filter smoke,$(PROFILE)),synthetic-smoke,synthetic)
  MANIFEST    := data/$(COHORT)/raw/manifest.csv
  SYNTH_ARGS  := $(call profile_get,'--n-patients'$(comma) p.n_patients$(comma) '--shape'$(comma) *p.synth_shape)
else
  # A cohort is its manifest, not its folder's name: two manifests in folders of one name get
  # apart folders (the name plus a checksum of the manifest's absolute path, cksum: POSIX).
  COHORT      := $(notdir $(patsubst %/,%,$(dir $(abspath $(DATA)))))-$(shell printf '%s' '$(abspath $(DATA))' | cksum | cut -d' ' -f1)
  MANIFEST    := $(DATA)
endif
ifneq ($(and $(strip $(LAUNCH)),$(strip $(GPUS))),)
$(error GPUS and LAUNCH were both given: with LAUNCH the scheduler gives each training its GPU (e.g. srun --gres=gpu:1); drop GPUS)
endif
# $(call launched,COMMAND,JOB-NAME): COMMAND run through LAUNCH (or LAUNCH_CPU for data steps),
# named for the scheduler's queue; as is when the knob is empty.
launched = $(if $(strip $(1)),SLURM_JOB_NAME=$(2) $(1))
CACHE     := data/$(COHORT)/$(SIZE_NAME)
SPLITS    := data/$(COHORT)/splits.json
# Your own cohort's outputs sit beside the synthetic ones instead of replacing them.
RESULTS   := results/$(PROFILE)$(if $(DATA),-$(COHORT))$(if $(SEED),-seed$(SEED))
# A run's folder and the file that marks it complete are tcl.training.runs's to say:
# $(call run_file,CONFIG,DRAW) is that file.
RUN_FILE  := $(shell $(PYTHON) -m tcl.training.runs make-pattern)
run_file   = $(RESULTS)/$(subst @draw@,$(2),$(subst @config@,$(1),$(RUN_FILE)))
RUNS      := $(RESULTS)/$(firstword $(subst /, ,$(RUN_FILE)))
NBOUT     := $(RESULTS)/notebooks
EVAL      := $(RESULTS)/evaluation
FIGURES   := figures/$(PROFILE)$(if $(DATA),-$(COHORT))$(if $(SEED),-seed$(SEED))
NOTEBOOK  := $(PYTHON) -m tcl.pipeline.run_notebook
QUIET     := $(if $(filter smoke,$(PROFILE)),--quiet)  # no progress bars in test logs
# Notebooks run in notebooks/: a relative path gets ../ in front, an absolute one (DATA=/...) not.
from_notebooks = $(if $(filter /%,$(1)),$(1),../$(1))
COMMON    := -p profile $(PROFILE) -p cohort $(COHORT) -p manifest $(call from_notebooks,$(MANIFEST)) \
             -p cache ../$(CACHE) -p splits ../$(SPLITS) -p results ../$(RESULTS) \
             -p figures ../$(FIGURES)
# The modules each step imports (tests/test_makefile.py checks that none is missing): editing
# one reruns the steps that run it. Every step reads tcl/utils.py, the p > 0.5 rule and the run
# folder layout.
DATA_SOURCES  := $(wildcard tcl/data/*.py tcl/synthetic/__init__.py tcl/synthetic/cohort.py) tcl/parallel.py
SHARED_SOURCES := tcl/utils.py tcl/tasks.py tcl/training/__init__.py tcl/training/runs.py
TRAIN_SOURCES := $(SHARED_SOURCES) $(wildcard tcl/training/*.py tcl/models/*.py) tcl/data/draw.py tcl/config.py tcl/application/__init__.py tcl/application/saved.py
SAVED_CONFIGS := proposed $(if $(filter all,$(SAVE_WEIGHTS)),$(CONFIGS),$(SAVE_WEIGHTS))
EVAL_SOURCES  := $(SHARED_SOURCES) $(wildcard tcl/evaluation/*.py) tcl/pipeline/__init__.py tcl/pipeline/chapters.py
RUN_TARGETS   := $(foreach c,$(CONFIGS),$(foreach d,$(DRAWS),$(call run_file,$(c),$(d))))
RADIOMICS_SOURCES := $(SHARED_SOURCES) $(wildcard tcl/radiomics/*.py)
RADIOMICS     := $(foreach d,$(DRAWS),$(call run_file,radiomics,$(d)))
REPORTS       := $(foreach n,01_data 03_comparison 04_ablation 05_significance 06_representations 07_predict_explain,$(NBOUT)/$(n).ipynb)
endif

# The README's results block shows full runs only: not smoke, not your own cohort, all draws.
# It first compares the run's Tables 2-3 with the README's as committed (same profile), and
# says whether they agree (python -m tcl report compare); a cohort of your own or a subset of the draws
# has no reference to compare with.
SKIP_COMPARE = $(if $(DATA),a cohort of your own ($(COHORT)) has no reference in the README,$(if $(filter-out $(DRAWS),$(ALL_DRAWS)),only draws $(DRAWS) were run and the README holds all three))
pipeline: announce $(REPORTS)
	$(PYTHON) -m tcl report compare README.md $(FIGURES) $(PROFILE) --runs $(RUNS)$(if $(SKIP_COMPARE), --skip "$(SKIP_COMPARE)")
	$(if $(or $(DATA),$(SEED),$(filter smoke,$(PROFILE)),$(filter-out $(DRAWS),$(ALL_DRAWS))),,$(PYTHON) -m tcl report readme README.md $(FIGURES) $(PROFILE) $(EVAL))
	@echo "tcl: done — profile $(PROFILE); tables and figures in $(FIGURES)/, notebooks in $(NBOUT)/"

cohort: announce $(CACHE)/meta.json $(SPLITS)

announce:
	@echo "tcl: profile $(PROFILE) (input $(SIZE_NAME)); cohort $(COHORT) from $(MANIFEST)$(if $(DATA),, [synthetic]); draws $(DRAWS)"

ifeq ($(DATA),)
$(MANIFEST): $(DATA_SOURCES)
	$(call launched,$(LAUNCH_CPU),tcl-synth) $(PYTHON) -m tcl synth --out $(dir $@) --seed 0 $(SYNTH_ARGS) $(QUIET)
endif

# A real cohort is validated first (every problem listed at once); the synthetic one is checked
# by the test suite, and preprocessing still stops on any bad input.
$(CACHE)/meta.json: $(MANIFEST) $(DATA_SOURCES)
	$(if $(DATA),$(PYTHON) -m tcl validate $(MANIFEST)$(if $(ACCEPT_MISREGISTRATION), --accept-misregistration))
	$(call launched,$(LAUNCH_CPU),tcl-preprocess) $(PYTHON) -m tcl preprocess --manifest $(MANIFEST) --out $(CACHE) --size $(SIZE) $(QUIET)

$(SPLITS): $(MANIFEST) tcl/data/splits.py
	$(PYTHON) -m tcl splits --manifest $(MANIFEST) --out $@ --draws 3 --seed 666

$(NBOUT)/01_data.ipynb: notebooks/01_data.ipynb $(CACHE)/meta.json $(SPLITS) $(EVAL_SOURCES) tcl/synthetic/ceilings.py
	$(NOTEBOOK) $< $@ $(COMMON)

# One training notebook per configuration and draw; the run's predictions.csv is the target.
define TRAIN_RULE
$(call run_file,$(1),$(2)): notebooks/02_train.ipynb $(CACHE)/meta.json $(SPLITS) $(TRAIN_SOURCES)
	$(call launched,$(LAUNCH),tcl-$(PROFILE)-$(1)-draw$(2)) $(NOTEBOOK) $$< $(NBOUT)/02_train_$(1)_draw$(2).ipynb $(if $(GPUS),--gpus $(GPUS)) $(COMMON) -p config $(1) -p draw $(2) $(if $(SEED),-p seed $(SEED)) -p threads $(THREADS) -p retrain True -p save_weights $(if $(filter $(1),$(SAVED_CONFIGS)),True,False)
endef
$(foreach c,$(CONFIGS),$(foreach d,$(DRAWS),$(eval $(call TRAIN_RULE,$(c),$(d)))))

$(RADIOMICS) &: $(MANIFEST) $(SPLITS) $(RADIOMICS_SOURCES)
	$(call launched,$(LAUNCH_CPU),tcl-radiomics) $(PYTHON) -m tcl radiomics --manifest $(MANIFEST) --splits $(SPLITS) --out $(RUNS)/radiomics

# The draws evaluated are part of the evaluation's inputs: this file changes when DRAWS does.
$(EVAL)/draws.txt: FORCE
	@mkdir -p $(@D); echo "$(DRAWS)" | cmp -s - $@ || echo "$(DRAWS)" > $@

$(EVAL)/metrics_summary.csv: $(RUN_TARGETS) $(RADIOMICS) $(EVAL_SOURCES) $(EVAL)/draws.txt
	$(PYTHON) -m tcl evaluate $(RUNS) --out $(EVAL) $(foreach d,$(DRAWS),--draw $(d))

# 06 and 07 look at one draw's proposed network: the first of DRAWS.
$(NBOUT)/06_representations.ipynb $(NBOUT)/07_predict_explain.ipynb: NOTEBOOK_ARGS = -p draw $(firstword $(DRAWS))
$(NBOUT)/0%.ipynb: notebooks/0%.ipynb $(EVAL)/metrics_summary.csv $(NBOUT)/01_data.ipynb
	$(NOTEBOOK) $< $@ $(COMMON) $(NOTEBOOK_ARGS)

# the saved network applied to raw files: also rerun when prediction or explanation changes
$(NBOUT)/07_predict_explain.ipynb: $(wildcard tcl/application/*.py)

# ---------------------------------------------------------------- GPU check (issue 10)
# gpu-wheels: the wheels that a GPU machine without network lacks (nibabel, papermill, the
# kernel machinery), downloaded into .whl/ (ignored) for the device tool's carry list.
# gpu-check: tcl/perf/gpu_check.sh: stem and tcl bench figures, then make all PROFILE=paper
# DRAWS=0 within a time budget; summary in $OUT or results/gpu-check. Options in
# GPU_CHECK_ARGS, e.g. "--profile smoke --device cpu --jobs 2 --threads 1" to rehearse on a CPU.
GPU_CHECK_ARGS ?=
gpu-wheels: env
	$(PYTHON) tcl/perf/gpu_wheels.py --dest .whl

gpu-check:
	PYTHON="$(PYTHON)" bash tcl/perf/gpu_check.sh $(GPU_CHECK_ARGS)
