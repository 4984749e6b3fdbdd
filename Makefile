# net-core workspace commands. Every target creates or updates .venv itself, so a fresh
# machine needs only Python 3.11+ and make.
#
#   make demo    the event bus end to end on local disk (./net-demo-data; DEMO_ARGS="--events N")
#   make test    lint (ruff, mypy) + the whole test suite
#   make lint    lint only
#   make venv    create/update .venv with every workspace distribution (editable, dev extras)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.workspace-installed

# Every directory with its own pyproject.toml is a workspace distribution; the root
# (net-core) is installed first so the others resolve their net-core requirement to it.
MEMBERS := $(sort $(dir $(wildcard */pyproject.toml plugins/*/pyproject.toml)))
PYPROJECTS := pyproject.toml $(wildcard */pyproject.toml plugins/*/pyproject.toml)

PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: venv demo test lint format clean

venv: $(STAMP)

$(STAMP): $(PYPROJECTS) setup.py net_core/_pcstruct_c.c Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "net-core needs Python 3.11 or newer (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(foreach m,$(MEMBERS),-e './$(m)')
	@touch $(STAMP)

demo: venv
	$(BIN)/net demo $(DEMO_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
