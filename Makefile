# Two commands: `make demo` (set up and run the server with demo data) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install lint bench clean

$(BIN)/scrm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/scrm

install: $(BIN)/scrm

demo: install
	$(BIN)/scrm demo

test: install
	$(BIN)/ruff check scrm channels bot_flows tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: install
	for b in bench/*.py; do $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) var test-output .pytest_cache
