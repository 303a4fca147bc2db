# One entry point for people and CI. Every target sets up what it needs first (idempotent).
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

CHROMIUM ?= /usr/bin/chromium
IMAGE    ?= cbir:local

.PHONY: setup browser serve test test-fast lint format bench bench-dae image smoke clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP)

browser:  ## Debian's Chromium, which the browser test drives through Playwright (apt-get: root or sudo)
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; else \
	    echo "the browser test needs Debian's chromium at $(CHROMIUM): run 'apt-get install chromium' as root" >&2; \
	    exit 1; fi; \
	  echo "installing Debian's chromium for the browser test"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

serve: setup  ## set up, then start the service on the embedded default (http://127.0.0.1:8000, docs at /docs)
	$(BIN)/cbir serve

test: setup browser  ## set up, then run the whole test suite
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app models index tests bench

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python bench/index_throughput.py

bench-dae: setup  ## the autoencoder against pixels, PCA and Lite0 on MNIST and CIFAR-10 (CPU: long; --skip-cifar is quicker)
	$(BIN)/python bench/dae.py

image:  ## build the CPU image with buildah (root; python:3.11-slim must be pullable or local)
	buildah bud --isolation chroot --network host --format docker -t $(IMAGE) -f docker/Dockerfile .

smoke:  ## start the built image, index a few photos beside the service, search (slow: not part of CI)
	docker/smoke.sh $(IMAGE)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info test-artifacts
