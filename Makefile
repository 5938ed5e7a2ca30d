# Two entry points that work on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test ui clean

$(BIN)/sweep: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build pinned first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[demo,test]'
	touch $@

setup: $(BIN)/sweep

demo: setup
	$(BIN)/sweep launch sweeps/demo.yaml

test: setup
	$(BIN)/python -m pytest -q

ui: setup
	$(BIN)/sweep ui

clean:
	rm -rf mlruns/* exports .pytest_cache
