# The two commands of the README: `make run` (set up and start the dashboard) and `make test` (set up and
# run the whole test suite). Both create .venv on first use and reinstall only when requirements change.
# pruning_core itself is installed editable (`pip install -e . --no-deps`, after its requirements), so after
# `source .venv/bin/activate` the `pruning-core` command and `import pruning_core` work from any folder.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test bench clean

run: $(VENV)/.runtime
	$(PY) -m streamlit run app.py --server.port $(PORT)

test: $(VENV)/.testing
	$(PY) -m pytest

bench: $(VENV)/.runtime
	$(PY) benchmarks/bench_prune.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_lottery.py

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.runtime: requirements.txt pyproject.toml $(VENV)/.created
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e . --no-deps
	touch $@

$(VENV)/.testing: requirements-test.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts pruning_core.egg-info
