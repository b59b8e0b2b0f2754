# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the tests drive as real peers (DCMTK tools, Orthanc) or use (fonts for PDF reports,
# poppler-utils: pdftoppm renders the delivered PDF to PNG; zbar-tools: zbarimg reads its QR code back;
# orthanc-dicomweb: Orthanc's STOW-RS client, the third way in `python -m bench edge`).
DEBS   := dcmtk orthanc orthanc-dicomweb fonts-wqy-microhei chromium chromium-driver poppler-utils zbar-tools
PYTEST_ARGS ?=
# The consortium file of `make run`: CONSORTIUM=PATH, else YILIAN_CONSORTIUM, else the example
# (yilian's own rule: --consortium, then the variable, then deploy/consortium.example.yaml).
CONSORTIUM ?=

# The OHIF Viewer served at /viewer/ (services/api/viewer/install.py: pinned @ohif/app, sha512 checked;
# OHIF_TARBALL=PATH installs a copied tarball where the npm registry cannot be reached).
OHIF_TARBALL ?=

.PHONY: run test install install-test viewer debs bench proof-edge clean help

help:
	@echo "make run    - create $(VENV), install Yilian, start 'yilian up' (CONSORTIUM=PATH or YILIAN_CONSORTIUM; default the example)"
	@echo "make test   - install test needs (pip extras + Debian packages) and run the whole suite"
	@echo "make viewer - put the pinned OHIF Viewer in var/viewer (YILIAN_VIEWER_DIR; OHIF_TARBALL=PATH offline)"
	@echo "make bench  - run the benchmarks in bench/ (see docs/performance.md)"
	@echo "make proof-edge - the township edge at full scale: 500 instances, a poor link, a 3-minute outage (~7 min; docs/edge.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

viewer: install
	$(BIN)/python -m services.api.viewer $(if $(OHIF_TARBALL),--tarball $(OHIF_TARBALL))

run: install viewer
	$(BIN)/yilian up $(if $(CONSORTIUM),--consortium $(CONSORTIUM))

# Installs the Debian packages the suite needs when they are missing (needs root or sudo).
debs:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The suite starts a few hundred Python processes (yilian up, its indexer, the CLI): each compiled
# Yilian's sources again where PYTHONDONTWRITEBYTECODE is set (CI images set it). Their bytecode is
# kept in $(VENV)/pycache instead, outside the tree.
test: debs install-test viewer
	PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache $(BIN)/python -m pytest -q -ra --durations=30 $(PYTEST_ARGS)

bench: debs install-test
	$(BIN)/python -m bench

# The edge's full-scale proof, skipped by `make test` for its length (YILIAN_TEST_EDGE_OUTAGE_SECONDS=N: a shorter outage).
proof-edge: debs install-test
	YILIAN_TEST_EDGE_SCALE=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/edge/test_scale.py

clean:
	rm -rf $(VENV) var .pytest_cache test-artifacts
