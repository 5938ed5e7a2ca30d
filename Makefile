# Two entry points that work on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# constraints.txt: the exact versions the tests last passed with. `make demo` and `make test` install them,
# so a fresh machine does not pull whatever is newest; pyproject.toml keeps compatible ranges for anyone
# installing the package into their own environment. Refresh on purpose, after the tests pass on newer
# versions: `make constraints` (writes the versions installed in $(VENV)).
CONSTRAINTS ?= constraints.txt

.PHONY: setup demo test ui clean constraints

$(BIN)/sweep: pyproject.toml $(CONSTRAINTS)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build pinned first (version from the constraints): an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q -c $(CONSTRAINTS) torch
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[demo,test]'
	touch $@

constraints:
	@echo "# The versions \`make demo\` and \`make test\` install (pip -c): what the tests last passed with." > $(CONSTRAINTS)
	@echo "# Refreshed on purpose with \`make constraints\` from $(VENV) ($$(date -u +%Y-%m-%d)); local build labels" >> $(CONSTRAINTS)
	@echo "# (+cpu) are dropped so that the pin matches the CPU wheel and the plain one." >> $(CONSTRAINTS)
	$(BIN)/pip freeze --exclude-editable | grep -v '^compression-sweep==' | sed 's/+[A-Za-z0-9.]*$$//' >> $(CONSTRAINTS)

setup: $(BIN)/sweep

demo: setup
	$(BIN)/sweep launch sweeps/demo.yaml

test: setup
	$(BIN)/python -m pytest -q

ui: setup
	$(BIN)/sweep ui

clean:
	rm -rf mlruns/* exports .pytest_cache
