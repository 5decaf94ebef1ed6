# Two commands matter: `make demo` runs the default workflow, `make test` the test suite
# (`make run CONFIG=...` runs another config). Each creates .venv on first use and installs
# the project into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
# Idle OpenMP threads sleep instead of spinning, so that jobs sharing a few cores do not
# steal each other's time.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo run test test-run test-slow test-slurm lint bench train-default-models clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	snakemake --cores all

# Another config file: make run CONFIG=config/imagenet_resnet50_stylegan_xl.yaml [CORES=4].
# Its YAML is checked first, because Snakemake's own message names neither file nor line.
CONFIG ?= config/config.yaml
CORES  ?= all
run: $(BIN)/.installed
	$(BIN)/python -m pipeline.stages.config $(CONFIG)
	snakemake --cores $(CORES) --configfile $(CONFIG)

# Most of the suite's time is Snakemake and model start-up in real workflow runs, which two
# workers overlap even on two cores (the suite took under half the time with two, same load).
TEST_WORKERS ?= 2
test: $(BIN)/.installed
	bash scripts/install_chromium.sh
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow and not slurm"
	$(MAKE) lint

# The tiny config the workflow tests use (.test/config/config.yaml), run as a user would, in
# .test/; its .test/benchmarks/tiny/ TSVs are what profiles/slurm-local's resources come from.
test-run: $(BIN)/.installed
	PYTHONPATH=$(CURDIR) snakemake --cores 2 --directory .test

# Longer end-to-end checks: more kills in the fault-injection test.
test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

# A real single-node SLURM cluster on this machine (installs slurm-wlm and munge with apt).
test-slurm: $(BIN)/.installed
	PIPELINE_SLURM_TEST=1 $(BIN)/python -m pytest -q -m slurm tests/test_slurm.py

lint: $(BIN)/.installed
	$(BIN)/ruff check pipeline tests bench workflow/scripts
	snakemake --lint

# The CPU benchmarks; bench/gpu_check.sh is the one for a GPU machine.
bench: $(BIN)/.installed
	$(BIN)/python bench/world_throughput.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/concepts_throughput.py
	$(BIN)/python bench/paper_loop.py --device cpu --units 32 --samples 16 --paper-samples 2 --batch-size 512 \
		--classifier-spec '{"kind": "builtin", "name": "shapes-classifier"}' \
		--generator-spec '{"kind": "builtin", "name": "shapes-generator"}'

train-default-models: $(BIN)/.installed
	snakemake --cores all train_default_models

clean:
	rm -rf results .snakemake benchmarks
