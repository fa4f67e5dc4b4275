# basicsr-unlearn: every target creates .venv on first use (torch first, then basicsr without build isolation).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: test demo bench lint clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel cython numpy
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install --no-build-isolation basicsr==1.4.2
	$(PIP) install -e .[test]
	touch $@

# one pytest worker per CPU core (pytest-xdist), each test file on one worker so module fixtures are built once
test: $(VENV)/.installed
	$(PY) -m ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile tests basicsr_unlearn --durations=15

# make demo: base models from checkpoints/demo/ when shipped (sha256-checked), else trained; FRESH=1 trains them in
# this run, even where an earlier run trained them, and reruns every stage after them. Rebuild the shipped ones:
# $(PY) tools/demo.py --build-base
demo: $(VENV)/.installed
	$(PY) tools/demo.py $(if $(FRESH),--fresh-base)

bench: $(VENV)/.installed
	$(PY) bench/run_all.py

lint: $(VENV)/.installed
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
