# `make demo` and `make test` are all a new user needs: each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crackscan-installed

.PHONY: demo test test-fast bench-train clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,export,serve]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/crackscan demo --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Unit tests only: seconds, no real-data training.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench-train: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf $(VENV) crackscan-demo .pytest_cache
