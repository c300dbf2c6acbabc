# Two commands do everything: `make run` (set up, then serve the app on 127.0.0.1:8501) and
# `make test` (set up, then run the whole test suite). Set-up is incremental: a second run only
# checks stamps and takes seconds.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
PYTHON := $(VENV)/bin/python
PORT ?= 8501
# Python packages: requirements.txt lists the top-level ones; requirements.lock, generated from it by
# `make lock` (pip-compile), pins every package. Set-up installs the lock, and reinstalls when the
# lock (or the pinned pip) changes.
LOCK := requirements.lock
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.6.2
LOCK_TOOLS := $(VENV)/lock-tools
REQ_STAMP := $(VENV)/.req-$(shell { cat $(LOCK) 2>/dev/null; echo pip==$(PIP_VERSION); } | sha1sum | cut -c1-12)
NPM_STAMP := web_export/node_modules/.lock-$(shell [ -f web_export/package-lock.json ] && sha1sum web_export/package-lock.json | cut -c1-12)

.PHONY: setup sysdeps lock run demo test
setup: sysdeps $(REQ_STAMP) $(NPM_STAMP)

# Debian packages the browser tests and screenshots need (Chromium, a Korean font).
sysdeps:
	@if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi nanum || ! fc-list 2>/dev/null | grep -qi "color emoji"; then \
	  echo "installing Debian packages: chromium fonts-nanum fonts-noto-color-emoji"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-nanum fonts-noto-color-emoji >/dev/null; \
	fi

$(REQ_STAMP): $(LOCK)
	@[ -x $(PYTHON) ] || $(PY) -m venv $(VENV)
	$(PIP) install -q pip==$(PIP_VERSION)
	$(PIP) install -q -r $(LOCK)
	@rm -f $(VENV)/.req-* && touch $@

# Regenerate requirements.lock from requirements.txt, keeping the current pins that still fit;
# `make lock UPGRADE=1` moves every package to its newest allowed release. pip-compile runs from its
# own venv so that it never changes the project's packages.
lock:
	@[ -x $(LOCK_TOOLS)/bin/python ] || $(PY) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install -q pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)
	CUSTOM_COMPILE_COMMAND="make lock  (pip-compile, pip-tools $(PIP_TOOLS_VERSION))" \
	  $(LOCK_TOOLS)/bin/pip-compile --quiet --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links --no-emit-trusted-host $(if $(UPGRADE),--upgrade) \
	  --output-file $(LOCK) requirements.txt

$(NPM_STAMP):
	@if [ -f web_export/package-lock.json ]; then \
	  cd web_export && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error && touch ../$@; \
	fi

run: setup
	STUDIO_AUTOBUILD=1 $(VENV)/bin/streamlit run streamlit_app.py --server.headless true \
	  --server.address 127.0.0.1 --server.port $(PORT) --browser.gatherUsageStats false

# The public demo (STUDIO_MODE=demo, see README "Hosting the demo"): build the default run's model,
# INT8 export and browser bundle when missing, then serve with uploads capped at 2 MB (the flag takes
# whole megabytes) and no error details or developer menu for visitors.
demo: setup
	$(PYTHON) -m core demo-prepare
	STUDIO_MODE=demo $(VENV)/bin/streamlit run streamlit_app.py --server.headless true \
	  --server.address 127.0.0.1 --server.port $(PORT) --server.maxUploadSize 2 \
	  --client.showErrorDetails none --client.toolbarMode viewer --browser.gatherUsageStats false

test: setup
	$(PYTHON) -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && echo "no tests collected" && rc=0; exit $$rc
