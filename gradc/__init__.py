"""gradc: a static-graph gradient compiler for NumPy models.

    f = gradc.jit(loss)                         # compiled forward
    g = gradc.grad(loss)                        # gradients of argument 0
    vg = gradc.value_and_grad(loss, argnums=0)  # (value, gradients)
    step = gradc.train_step(loss, gradc.optim.Adam(lr=1e-3))  # loss = step(params, x, y)
    print(gradc.explain(loss, params, x, y))    # IR, passes, kernels, memory plan
    rng = gradc.random.default_rng(0)           # an argument: new random numbers every call
    y = gradc.at(x)[idx].set(v)                 # x with x[idx] = v, out of place (also .add)
"""
from ._version import __version__  # noqa: F401

from . import ops  # noqa: E402,F401  (registers every op)
from . import surface  # noqa: E402,F401  (installs the NumPy surface onto ir.Value)
from . import nn  # noqa: E402,F401
from .errors import (ArgumentError, CacheWarning, CompileError, ConstantArrayWarning,  # noqa: E402
                     FrozenRandomError,
                     GradcError, IndexOutOfRangeError, NonDifferentiableError, NonFiniteError,
                     RecompileWarning, ShapeError, SignatureError, TraceEffectWarning,
                     TracedBranchError, UnsupportedOpError)
from . import optim  # noqa: E402,F401
from . import random  # noqa: E402,F401
from .api import explain, grad, jit, value_and_grad  # noqa: E402
from .indexing import at  # noqa: E402
from .train import train_step  # noqa: E402
from .transforms import hessian, hvp, jacobian, vjp  # noqa: E402
from .aot import Spec  # noqa: E402

__all__ = ["Spec", "at", "jit", "grad", "value_and_grad", "train_step", "explain", "jacobian",
           "hessian", "vjp", "hvp", "nn", "optim", "random",
           "GradcError", "ArgumentError", "ShapeError", "UnsupportedOpError", "FrozenRandomError",
           "TracedBranchError", "SignatureError", "NonDifferentiableError", "NonFiniteError",
           "IndexOutOfRangeError", "CompileError", "CacheWarning", "RecompileWarning",
           "TraceEffectWarning", "ConstantArrayWarning", "__version__"]


def __getattr__(name):
    """`gradc.scipy` (and gradc.distributed) on first use: `import gradc` leaves SciPy and MPI
    out (~0.1 s), and `gradc.scipy.special.logsumexp` after a bare `import gradc` was an
    AttributeError."""
    if name in ("scipy", "distributed"):
        return _import_untraced(f"{__name__}.{name}")
    raise AttributeError(f"module 'gradc' has no attribute {name!r}")


def _import_untraced(module):
    """Import `module` with gradc's tracing hook off, if inside a trace (scipy.stats makes and
    draws from a generator at import, which the hook took for the user's random numbers);
    another profiler (cProfile's) is left as it is: given back to sys.setprofile, its C
    profiler object was called as a Python function, a TypeError."""
    import importlib
    import sys
    hook = sys.getprofile()
    ours = getattr(hook, "watch", None) is not None  # (frozen.Watch's hook)
    if ours:
        sys.setprofile(None)
    try:
        return importlib.import_module(module)
    finally:
        if ours:
            sys.setprofile(hook)
