PYTHON ?= python3

.PHONY: install example examples test bench bench-quick bench-fuse kernels readme

# mpi: mpi4py and the mpich wheel (mpiexec in the environment's bin/) for tests/test_distributed.py
install:
	$(PYTHON) -m pip install -e ".[test,examples,mpi]"

example: install
	$(PYTHON) examples/linear_regression.py

# every example trains to its target (each exits non-zero if it misses it)
EXAMPLES = linear_regression moons_mlp digits_mlp digits_cnn sequence_rnn attention gaussian_process
examples: install
	set -e; for ex in $(EXAMPLES); do echo "== examples/$$ex.py"; $(PYTHON) examples/$$ex.py --quiet; done

test: install
	$(PYTHON) -m pytest -q -x --durations=15

# W1-W10: gradc against NumPy by hand and, where installed, PyTorch (eager, torch.compile) and
# JAX, pinned to one thread, then at default threads and under contention; roughly 40-60
# minutes on 2 cores. BENCH_ARGS="--only W2,W3 --threads 2" etc.; see
# `python3 benchmarks/run.py --help`. The full output of the last reference run is in
# benchmarks/RESULTS.md.
BENCH_ARGS ?=
bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

bench-quick:
	$(PYTHON) benchmarks/run.py --quick $(BENCH_ARGS)

# W3 alone in more detail, and the moons MLP's compile in fresh processes
bench-fuse:
	$(PYTHON) benchmarks/bench_fuse.py

# ahead-of-time modules for the examples (NumPy + Numba only; see kernels/README.md). Regenerating
# them must give identical files: tests/test_aot.py compiles these same lines into a temporary
# folder and compares, so edit an example -> run `make kernels` -> commit kernels/.
GRADC ?= $(PYTHON) -m gradc.cli
kernels:
	$(GRADC) compile examples/linear_regression.py:loss --example examples/aot_specs.py:linear_regression_args --value-and-grad -q -o kernels/linear_regression_vg.py
	$(GRADC) compile examples/linear_regression.py:loss --example examples/aot_specs.py:linear_regression_args --train sgd --lr 0.1 -q -o kernels/linear_regression_sgd.py
	$(GRADC) compile examples/digits_mlp.py:loss --example examples/aot_specs.py:digits_mlp_args --train adam --lr 3e-3 -q -o kernels/digits_mlp_adam.py
	$(GRADC) compile examples/digits_cnn.py:loss --example examples/aot_specs.py:digits_cnn_args --train adam --lr 3e-3 -q -o kernels/digits_cnn_adam.py

# the README's list of supported NumPy ufuncs and functions, from the ops (tests/test_readme.py)
readme:
	$(PYTHON) -c "import gradc.trace as t; t.update_readme('README.md')"
