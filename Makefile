# Conway: `make demo` runs the whole system locally, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests use: a real browser and driver, a real Prometheus and Alertmanager,
# compose's validator.
DEBS := chromium chromium-driver prometheus prometheus-alertmanager docker-compose
DEB_BINS := /usr/bin/chromium /usr/bin/chromedriver /usr/bin/prometheus \
	/usr/bin/prometheus-alertmanager /usr/bin/docker-compose

.PHONY: demo test lint typecheck pytest bench setup system-deps clean

$(PY):
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv || true
	@if $(PYTHON) -m uv --version >/dev/null 2>&1; then $(PYTHON) -m uv venv -q $(VENV); \
	 else $(PYTHON) -m venv $(VENV); fi

# Editing the C fast path (collector/_fastotlp.c, built by setup.py) reinstalls, which rebuilds it.
$(STAMP): pyproject.toml setup.py collector/_fastotlp.c | $(PY)
	@if $(PYTHON) -m uv --version >/dev/null 2>&1; then \
	   $(PYTHON) -m uv pip install -q --python $(PY) -e '.[dev]'; \
	 else $(PY) -m pip install -q -e '.[dev]'; fi
	@touch $(STAMP)

setup: $(STAMP)

# Installs the Debian packages the tests need, when they are missing and we may (root).
system-deps:
	@missing=0; for b in $(DEB_BINS); do [ -x $$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(DEBS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; \
	  else echo "warning: not root; tests needing $(DEBS) will skip and say why"; fi; \
	fi

demo: $(STAMP)
	$(PY) scripts/demo.py $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check collector dashboard demo_services tests bench scripts

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP) system-deps
	$(PY) -m pytest -q -p no:cacheprovider

test: lint typecheck pytest

bench: $(STAMP)
	@for b in bench/*.py; do [ $$b = bench/benchlib.py ] && continue; \
	  echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
