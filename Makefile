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

# Everything but the slow tier: tiny images and models, the server, the browser page. Two
# workers, a test file each at a time (pytest-xdist): the tiny models leave a core idle otherwise
# (418 s serial, 229 s on two workers, 2-core Intel Xeon). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

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
