# Loa developer tasks. Needs only GNU make and Python 3.11+; everything else goes into .venv.
#
#   make run      install, migrate, load the demo, serve (API + scheduler + one worker, SQLite)
#   make test     install, run pytest (extra arguments: make test PYTEST_ARGS="-k phone -x")
#   make lint     ruff and mypy
#   make lock     re-resolve requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade to bump)
#   make clean    remove .venv, caches and build output (keeps data/)
#
# The CLI is .venv/bin/loa (no activation needed).

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Written after a successful install; reinstalls only when the inputs of the install change.
STAMP := $(VENV)/.loa-installed
LOA := $(VENV)/bin/loa
# Stoplight Prism, which the contract tests run on the Twilio API description (needs Node.js and
# npm; versions pinned by tests/contract/package-lock.json).
NPM ?= npm
PRISM_STAMP := tests/contract/node_modules/.loa-installed

# The operator page's browser test drives Debian's chromium, never a browser build that Playwright
# would download. `make test` installs it when it is missing and make runs as root with apt-get
# (as CI does); elsewhere it says how, and the test is skipped (failed under LOA_TEST_STRICT=1).
CHROMIUM ?= /usr/bin/chromium

PYTEST_ARGS ?=
SERVE_ARGS ?=
LOCK_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint lock clean chromium

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

$(VENV_PYTHON):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "Loa needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)." \
		     "Run with PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV_PYTHON) pyproject.toml requirements.lock
	$(VENV_PYTHON) -m pip install --progress-bar off -c requirements.lock -e ".[dev]"
	@touch $@

install: $(STAMP)

$(PRISM_STAMP): tests/contract/package.json tests/contract/package-lock.json
	cd tests/contract && $(NPM) ci --no-audit --no-fund
	@touch $@

run: $(STAMP)
	$(LOA) db upgrade
	$(LOA) demo
	$(LOA) serve $(SERVE_ARGS)

chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "make: installing Debian's chromium for the operator page's browser test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "make: $(CHROMIUM) is missing; the browser test needs it: sudo apt-get install chromium" >&2; \
		fi; \
	fi

test: $(STAMP) $(PRISM_STAMP) chromium
	LOA_TEST_CHROMIUM=$(CHROMIUM) $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

# Depends on the venv only (not on the stamp), so it also works when requirements.lock is
# missing or out of date. Existing pins are kept unless LOCK_ARGS=--upgrade.
# Index URLs are left out of the file: they come from each machine's pip configuration.
lock: $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install --progress-bar off \
		$(if $(wildcard requirements.lock),-c requirements.lock) pip-tools
	$(VENV)/bin/pip-compile --extra dev --strip-extras --no-emit-index-url --no-emit-find-links \
		$(LOCK_ARGS) -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -rf tests/contract/node_modules
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
