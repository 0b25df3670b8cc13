# The two commands of the README. Both work on a fresh machine with Python 3.11 and nothing else installed.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
TARGET ?= results/table1.csv   # the main job; `make table TARGET=all` also builds every other stage output

.PHONY: table test lint format smoke-ffhq smoke-slurm setup clean-results

## make table: set up .venv, then run the main job on the demo profile (params.yaml) through Snakemake.
table: setup
	$(BIN)/snakemake --cores all $(TARGET)

## make test: set up .venv, check the code's lint and format (ruff), then run the test suite (its 25 slowest tests listed last).
test: lint
	$(BIN)/python -m pytest -q --durations=25

## make lint: ruff's checks and its formatter's check (configuration: pyproject.toml); `make format` applies both fixes.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## make smoke-ffhq: the FFHQ profile's whole code path at real shapes, counts shrunk (profiles/ffhq-smoke), on stand-in
## inputs served from 127.0.0.1 (sgilo.smoke); writes smoke-ffhq/, checks Table 1 and prints each rule's time and RSS.
smoke-ffhq: setup
	$(BIN)/python -m sgilo.smoke --params profiles/ffhq-smoke/params.yaml --workdir smoke-ffhq

## make smoke-slurm: as root on Debian (installs slurm-wlm, slurmdbd, munge and mariadb-server when missing), a one-node
## SLURM cluster on 127.0.0.1 runs the tiny profile through Snakemake's SLURM executor with two jobs cancelled, compares
## it with a local run, and checks the FFHQ plan's jobs with sbatch --test-only; stops every daemon (docs/slurm.md).
smoke-slurm: setup
	$(BIN)/python tools/slurm_smoke.py

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or run: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean-results:
	rm -rf results logs .snakemake
