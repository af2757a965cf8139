# The README's two commands: `make serve` and `make test`. Everything else supports them.
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL_REPOSITORY ?= models
export MODEL_REPOSITORY

.PHONY: setup serve models models-if-missing test lint bench e2e-check container-check clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: on these machines 2.13.0 is a CPU build on disk; unpinned pip pulls CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[serve,train,dev]'
	touch $@

setup: $(VENV)/.installed

# Build the default models into MODEL_REPOSITORY (replaced by trained weights in `training defaults`).
models: setup
	$(PY) -m training defaults --out $(MODEL_REPOSITORY)

models-if-missing: setup
	@if ls $(MODEL_REPOSITORY)/*/*/card.json >/dev/null 2>&1; then \
		echo "models found in $(MODEL_REPOSITORY)"; else $(MAKE) models; fi

serve: models-if-missing
	$(PY) -m app

lint: setup
	$(VENV)/bin/ruff check contract app training tests bench docker/check
	$(VENV)/bin/ruff format --check contract app training tests bench docker/check
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

# Trains the default classifier and detector briefly, serves them, and checks that /v1/pose finds
# the people of held-out synthetic scenes (minutes; run by .ci/run after the unit suite).
e2e-check: setup
	$(VENV)/bin/pytest -q -m e2e tests/e2e -s

# The benchmark of README's Performance section: service vs in-process limit vs a naive server.
bench: models-if-missing
	$(PY) -m bench --baseline --repeats 3 --out bench-results

# Both images built and run for real (docker/check.sh): needs a container engine, or root to start
# one; without either it prints why and is skipped.
container-check:
	bash docker/check.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
