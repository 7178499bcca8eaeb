# The two commands a new user needs: `make quickstart` and `make test`.
# Each creates .venv when missing and installs the package (with its test extra) into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test install clean

install: $(STAMP)

# torch (test extra only) goes in first as its CPU build where the index offers one: the default wheel
# pulls ~5 GB of CUDA libraries into a fresh venv.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q 'torch==2.13.0+cpu' || $(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(PY) -m launch.quickstart --workdir runs/quickstart

test: $(STAMP)
	$(PY) -m pytest tests

clean:
	rm -rf runs .pytest_cache
