PYTHON ?= python3

.PHONY: install example examples test bench

# mpi: mpi4py and the mpich wheel (mpiexec in the environment's bin/) for tests/test_distributed.py
install:
	$(PYTHON) -m pip install -e ".[test,examples,mpi]"

example: install
	$(PYTHON) examples/linear_regression.py

# every example trains to its target (each exits non-zero if it misses it)
EXAMPLES = linear_regression moons_mlp digits_mlp digits_cnn sequence_rnn attention
examples: install
	set -e; for ex in $(EXAMPLES); do echo "== examples/$$ex.py"; $(PYTHON) examples/$$ex.py --quiet; done

test: install
	$(PYTHON) -m pytest -q -x --durations=15

bench:
	$(PYTHON) benchmarks/bench_fuse.py
