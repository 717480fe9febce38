# The README's two commands (run, test), plus lint and bench.
# Every target installs what it needs into .venv first; a stamp file skips the reinstall
# until pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint typecheck js-test bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# constraints.txt pins every transitive dependency to what the suite last passed with.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/opstream serve --port $(PORT)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install-dev
	$(BIN)/mypy

# The JavaScript unit tests, named by file: `node --test DIR` is not a folder run on newer Node.
# Without node they are skipped, saying so -- except under CI (any value), where that fails.
js-test:
	@if command -v node >/dev/null; then \
		node --test tests/js/*.test.mjs; \
	elif [ -n "$$CI" ]; then \
		echo "node not found: the JavaScript unit tests cannot run (apt-get install -y nodejs); CI=$$CI: failing instead of skipping" >&2; \
		exit 1; \
	else \
		echo "node not found: JavaScript unit tests skipped (apt-get install -y nodejs, or run scripts/test-services.sh as root)"; \
	fi

test: install-dev
	bash scripts/test-services.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@$(MAKE) --no-print-directory js-test
	. ./.test-env 2>/dev/null; $(BIN)/pytest --durations=15  # the slowest, so a growing suite shows where

bench: install-dev
	$(BIN)/python -m bench all --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .test-env
