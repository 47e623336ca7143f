"""Forward time of np.linalg.solve, cholesky and eigh compiled by gradc against NumPy, float64,
one matrix (64, 64) and a batch (256, 16, 16); a few seconds.

    OPENBLAS_NUM_THREADS=1 python3 benchmarks/bench_linalg.py
"""
import numpy as np, gradc, timeit
rng = np.random.default_rng(0)
def spd(*s):
    x = rng.standard_normal(s); return x @ np.swapaxes(x, -1, -2) + s[-1] * np.eye(s[-1])
for shape in [(64, 64), (256, 16, 16)]:
    a = spd(*shape); b = rng.standard_normal(shape[:-1] + (1,))
    for name, f in [("solve", lambda a, b: np.linalg.solve(a, b)), ("cholesky", lambda a, b: np.linalg.cholesky(a)),
                    ("eigh", lambda a, b: np.linalg.eigh(a))]:
        g = gradc.jit(f); g(a, b)
        n = 50 if len(shape) == 2 else 20
        tg = min(timeit.repeat(lambda: g(a, b), number=n, repeat=5)) / n
        tn = min(timeit.repeat(lambda: f(a, b), number=n, repeat=5)) / n
        print(f"{name:9s} {str(shape):14s} gradc {tg*1e6:9.1f} us  numpy {tn*1e6:9.1f} us  ratio {tg/tn:.2f}")
