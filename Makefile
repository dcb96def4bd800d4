PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-all lint format demo bench clean

# The last line says whether the fused kernels (the search's fast path) are built;
# TensorFlow's start-up messages go to $(VENV)/fused_kernels.log.
venv: $(STAMP)
	@$(BIN)/python -m bats_tf.fused_kernels 2>$(VENV)/fused_kernels.log || true

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Two workers (one per core); tests/conftest.py keeps the tests that share a module
# fixture on one worker.
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadgroup

# The tests CI runs: all but the end-to-end runs marked slow.
test: lint
	$(PYTEST) -m "not slow" tests

# Every test, the slow ones too.
test-all: lint
	$(PYTEST) tests

demo: venv
	$(BIN)/python scripts/demo.py --output_dir=runs/demo

bench: venv
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs build *.egg-info
