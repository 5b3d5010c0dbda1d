# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# One thread per core; the tiny model gains nothing from oversubscription.
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test lint install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and exactly, so the range in pyproject.toml is already satisfied and pip never
	# reaches for a multi-GB CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/rewardlab demo

# The real-model smoke test needs SmolLM2-135M-Instruct (a 93 MB wheel from the package index, converted once
# into ~/.cache/rewardlab); offline, that test skips and says why.
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/rewardlab models fetch smollm2-135m || echo "smollm2-135m not fetched: the real-model test will skip"
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs demo-runs
