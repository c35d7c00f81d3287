# Entry points (see README): `make demo` and `make test`, both creating .venv on first use; `make coverage` and
# `make mutation` add the report tools of requirements-dev.txt (docs/testing.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo_data
DEMO_SOURCE ?= auto
DEMO_OUT ?= output/demo

# Test processes in parallel; --dist loadfile keeps a file's tests (and its module fixtures) on one worker.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile
# Mutation testing: which configs of tests/mutation/ run, and the seconds each may take (pending mutants are listed).
MUTATION_TARGETS ?= losses engine gcl
MUTATION_BUDGET_S ?= 1800
MUTATION_DIR := .mutation

.PHONY: demo test coverage mutation fashion-data clean-demo

$(BIN)/.installed: requirements.txt requirements-test.txt requirements-test-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-test-nodeps.txt
	touch $@

# Debian's Fashion-MNIST (real images for the demo); best effort: the builders fall back to `shapes`.
fashion-data:
	@test -d /usr/share/datasets/fashion-mnist || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1; } || \
	  echo "note: Debian package dataset-fashion-mnist unavailable; demo and tests use procedural shapes"

demo: $(BIN)/.installed fashion-data
	PYTHON=$(BIN)/python DEMO_DIR=$(DEMO_DIR) DEMO_SOURCE=$(DEMO_SOURCE) DEMO_OUT=$(DEMO_OUT) bash scripts/demo.sh

test: $(BIN)/.installed fashion-data
	$(BIN)/python -m pytest -q -rs $(PYTEST_PARALLEL) tests

$(BIN)/.dev-installed: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Per-module line coverage on the terminal and as HTML in htmlcov/ (child processes included, see .coveragerc).
coverage: $(BIN)/.dev-installed fashion-data
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest -q -rs $(PYTEST_PARALLEL) --cov --cov-config=.coveragerc --cov-report=term \
	  --cov-report=html tests

# cosmic-ray on a copy of the tracked files (the working tree is never mutated): for each target, mutate its
# modules one change at a time, run its fast test subset, then print killed/survived counts and the survivors.
mutation: $(BIN)/.dev-installed
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)
	git ls-files -z | xargs -0 cp --parents -t $(MUTATION_DIR)
	cd $(MUTATION_DIR) && export PATH="$(CURDIR)/$(BIN):$$PATH" OMP_NUM_THREADS=1 && for target in $(MUTATION_TARGETS); do \
	  cosmic-ray init tests/mutation/$$target.toml $$target.sqlite && \
	  { timeout $(MUTATION_BUDGET_S) cosmic-ray exec tests/mutation/$$target.toml $$target.sqlite || true; } && \
	  echo "== $$target: surviving mutants, then the totals (killed = complete - surviving)" && \
	  cr-report --surviving-only --show-diff $$target.sqlite; \
	done

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_OUT)
