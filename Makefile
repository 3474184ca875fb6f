# Two commands do all set-up on a fresh Debian 12 machine (as root):
#   make demo   run the main job on the local Docker engine
#   make test   install what is missing, start the engine, run every test tier
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
FAB   := $(VENV)/bin/fab

.PHONY: setup demo test unit lint

setup:
	@./scripts/setup.sh

demo: setup
	$(FAB) demo

test: setup lint
	@./scripts/test-tiers.sh

unit: setup
	$(PY) -m pytest -q -m unit tests

lint: setup
	$(VENV)/bin/ruff check workbench fabfile.py tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

