# `make demo` and `make test` are all a new user needs: each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.crackscan-installed

.PHONY: demo test test-slow test-all bench-train models clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,export,serve,ray,report]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/crackscan demo --force

# Everything but the slow tier: tiny images and models, the server, the browser page.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Real-data training and accuracy, ONNX conversion, LiteRT embedding: minutes. CI runs both.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: test test-slow

bench-train: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py

# The built-in models in src/crackscan/models/: trained, exported, checked (~6 minutes).
models: $(STAMP)
	$(BIN)/python scripts/build_models.py

clean:
	rm -rf $(VENV) crackscan-demo .pytest_cache
