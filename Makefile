# Two commands from a fresh clone: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch wheels that lie on this project's machines' disks; other versions download gigabytes.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= cpu,dev

.PHONY: install browser demo test test-fast lint bench lock clean

install: $(VENV)/.installed

# constraints.txt pins every package at the versions the suite passed with, so pip never backtracks.
# --no-compile: pip byte-compiles one file at a time; the last step compiles everything installed (and the
# project) on every CPU instead. Bytecode must exist before the first run: where PYTHONDONTWRITEBYTECODE is set
# (as on this project's machines) Python never saves what it compiles, and every process, each Ray worker and
# actor among them, would compile torch and Ray again as it imports them (benchmarks/bytecode.py). Files that
# do not compile under this Python (torch's Python 3.12 test samples) are skipped.
$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -c constraints.txt pip
	$(PY) -m pip install --quiet --no-compile -c constraints.txt $(TORCH_PINS)
	$(PY) -m pip install --quiet --no-compile -c constraints.txt -e ".[$(EXTRAS)]"
	$(PY) -c "import compileall as c, sysconfig as s; [c.compile_dir(d, quiet=2, workers=0) for d in sorted({*map(s.get_path, ('purelib', 'platlib')), 'sare_core', 'pipelines'})]"
	touch $@

demo: install
	$(VENV)/bin/sare demo

# Debian's chromium and its driver, for the browser test of `sare serve`: installed when missing, as root where
# apt-get exists (CI); elsewhere the test is skipped and this says how to get it.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium / chromedriver missing: the browser test of sare serve will be skipped (make browser as root)"; fi

test: install browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check sare_core pipelines tests benchmarks cluster configs

bench: install
	@echo "benchmarks/ scripts each write their results under results/; see docs/BENCHMARKS.md"

# Rewrite constraints.txt from the current .venv (after changing requirements, and the suite passing).
lock: install
	{ sed -n '/^# /p' constraints.txt; $(PY) -m pip freeze --all | grep -v -E '^(-e |sare[= ]|# Editable|setuptools==|wheel==)'; } > constraints.tmp
	mv constraints.tmp constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
