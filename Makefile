# Every target builds its own virtual environment from the repo's files first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install demo test bench lint docs data browser clean

# The base environment (what the benchmarks run in), then the test-only integrations installed
# over it with every base package held at its version (pip freeze): they add packages, never
# change one (benchmarks/environment.py relies on it).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[data,report,dev,ray]'
	$(PY) -m pip freeze --exclude-editable > $(VENV)/base-freeze.txt
	$(PY) -m pip install -q -c constraints.txt -c $(VENV)/base-freeze.txt -e '.[lightning,hf,docs]'
	touch $(STAMP)

install: $(STAMP)

# The demo needs the core and MNIST-1D only; not byte-compiling torch's thousands of modules
# at install time (Python compiles the few the demo imports) saves about a minute.
$(DEMO_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile -c constraints.txt -e '.[mnist1d]'
	touch $(DEMO_STAMP)

# Fashion-MNIST comes from Debian's package; installing it needs root. Best effort: tests that
# need it skip with a clear reason when it is absent.
data:
	@if [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
		|| echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"; \
	fi

# Chromium (Debian's package) lets the test suite open the HTML report in a headless browser.
# Best effort, like the data: that test skips when Chromium is absent.
browser:
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
		|| echo "note: could not install chromium; the browser test will skip"; \
	fi

demo: $(DEMO_STAMP)
	$(VENV)/bin/torchgrow demo

test: install data browser
	$(PY) -m pytest -q

bench: install data
	$(PY) -m benchmarks.run_all

# The API reference from the docstrings, with the guides (build/site); warnings are errors.
docs: install
	$(VENV)/bin/mkdocs build --strict

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples tutorials
	$(VENV)/bin/ruff format --check src tests benchmarks examples tutorials

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .hypothesis
