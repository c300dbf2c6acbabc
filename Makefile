# Two commands do everything: `make run` (set up, then serve the app on 127.0.0.1:8501) and
# `make test` (set up, then run the whole test suite). Set-up is incremental: a second run only
# checks stamps and takes seconds.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
PYTHON := $(VENV)/bin/python
PORT ?= 8501
REQ_STAMP := $(VENV)/.req-$(shell sha1sum requirements.txt | cut -c1-12)
NPM_STAMP := web_export/node_modules/.lock-$(shell [ -f web_export/package-lock.json ] && sha1sum web_export/package-lock.json | cut -c1-12)

.PHONY: setup sysdeps run test
setup: sysdeps $(REQ_STAMP) $(NPM_STAMP)

# Debian packages the browser tests and screenshots need (Chromium, a Korean font).
sysdeps:
	@if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi nanum || ! fc-list 2>/dev/null | grep -qi "color emoji"; then \
	  echo "installing Debian packages: chromium fonts-nanum fonts-noto-color-emoji"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-nanum fonts-noto-color-emoji >/dev/null; \
	fi

$(REQ_STAMP): requirements.txt
	@[ -x $(PYTHON) ] || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	@rm -f $(VENV)/.req-* && touch $@

$(NPM_STAMP):
	@if [ -f web_export/package-lock.json ]; then \
	  cd web_export && npm ci --no-audit --no-fund --loglevel=error && touch ../$@; \
	fi

run: setup
	STUDIO_AUTOBUILD=1 $(VENV)/bin/streamlit run streamlit_app.py --server.headless true \
	  --server.address 127.0.0.1 --server.port $(PORT) --browser.gatherUsageStats false

test: setup
	$(PYTHON) -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && echo "no tests collected" && rc=0; exit $$rc
