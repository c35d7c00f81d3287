# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo_data
DEMO_SOURCE ?= auto
DEMO_OUT ?= output/demo

.PHONY: demo test fashion-data clean-demo

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
	$(BIN)/python -m pytest -q tests

clean-demo:
	rm -rf $(DEMO_DIR) $(DEMO_OUT)
