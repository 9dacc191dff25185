# Two entry points, both self-installing into .venv at the repo root:
#   make demo   set-up + the main job on its embedded default
#   make test   set-up + lint + the full test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seethrough-installed

.PHONY: demo test test-slow lint bench-capture clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel this project is built against; a later
# `pip install -e .` sees torch>=2.6 satisfied and installs no other build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,hf,ray]"
	touch $(STAMP)

# The report test opens the HTML in headless Chromium (Debian's package; installed if missing).
CHROMIUM := $(shell command -v chromium || command -v chromium-browser)
chromium:
ifeq ($(CHROMIUM),)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
endif

demo: $(STAMP)
	$(PY) -m seethrough.demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

# The slow checks (MiniLM worked examples, full calibrations) run with `make test-slow`; CI runs `make test`.
test: lint chromium
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

bench-capture: $(STAMP)
	$(PY) benchmarks/capture.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
