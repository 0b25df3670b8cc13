# The two commands of the README. Both work on a fresh machine with Python 3.11 and nothing else installed.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
TARGET ?= results/table1.csv   # the main job; `make table TARGET=all` also builds every other stage output

.PHONY: table test setup clean-results

## make table: set up .venv, then run the main job on the demo profile (params.yaml) through Snakemake.
table: setup
	$(BIN)/snakemake --cores all $(TARGET)

## make test: set up .venv, then run the test suite.
test: setup
	$(BIN)/python -m pytest -q

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or run: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean-results:
	rm -rf results logs .snakemake
