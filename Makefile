PYTHON ?= python3

.PHONY: install example test bench

install:
	$(PYTHON) -m pip install -e ".[test]"

example: install
	$(PYTHON) examples/linear_regression.py

test: install
	$(PYTHON) -m pytest -q -x --durations=15

bench:
	$(PYTHON) benchmarks/bench_fuse.py
