# Every target creates .venv and installs requirements.txt first, so each works on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test check smoke remote install clean-venv

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

repro: $(STAMP)
	dvc repro

# Two workers, one thread each: tiny tensors gain nothing from a second thread, and two processes sharing two
# cores with two OpenMP threads each slow each other down many times over.
test: $(STAMP)
	OMP_NUM_THREADS=1 python -m pytest -q -n 2 --dist loadfile tests

# The fast tier, to run while editing: every test but the e2e ones (pytest markers; no DVC, no stage subprocesses),
# so the unit tests, the params schema checks (tests/test_params.py) and the graph checks (tests/test_graph.py).
check: $(STAMP)
	OMP_NUM_THREADS=1 python -m pytest -q -n 2 --dist loadfile -m "not e2e" tests

# A local-directory DVC remote (default), for `dvc push` / `dvc pull` of data, models and reports.
REMOTE ?= $(abspath ..)/difflab-dvc-remote
remote: $(STAMP)
	mkdir -p $(REMOTE)
	dvc remote add --default --force local $(REMOTE)
	@echo "DVC remote 'local' -> $(REMOTE); now: dvc push / dvc pull / dvc repro --pull"

smoke: $(STAMP)
	python tests/smoke.py

clean-venv:
	rm -rf $(VENV)
