# Two commands from a fresh clone: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch wheels that lie on this project's machines' disks; other versions download gigabytes.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= cpu,dev

.PHONY: install demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(VENV)/bin/sare demo

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check sare_core pipelines tests benchmarks cluster configs

bench: install
	@echo "benchmarks/ scripts each write their results under results/; see docs/BENCHMARKS.md"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
