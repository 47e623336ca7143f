"""The public entry points. Each works called directly or as a decorator (with or without
options): `gradc.grad(f)`, `@gradc.grad`, `@gradc.grad(argnums=1)`."""
import functools

from .function import Function


def jit(fun=None, *, target="cpu", max_signatures=None):
    """Compile `fun`'s forward: returns what `fun` returns (fresh arrays)."""
    if fun is None:
        return functools.partial(jit, target=target, max_signatures=max_signatures)
    return Function(fun, "jit", target=target, max_signatures=max_signatures)


def grad(fun=None, *, argnums=0, copy=False, target="cpu", max_signatures=None):
    """Gradient of scalar `fun` with respect to argument(s) `argnums`, with the same pytree
    structure. Unless copy=True, the arrays are views of fixed buffers that the next call
    overwrites."""
    if fun is None:
        return functools.partial(grad, argnums=argnums, copy=copy, target=target,
                                 max_signatures=max_signatures)
    return Function(fun, "grad", argnums=argnums, copy=copy, target=target,
                    max_signatures=max_signatures)


def value_and_grad(fun=None, *, argnums=0, copy=False, target="cpu", max_signatures=None):
    """(value, gradients) of scalar `fun`; see `grad`."""
    if fun is None:
        return functools.partial(value_and_grad, argnums=argnums, copy=copy, target=target,
                                 max_signatures=max_signatures)
    return Function(fun, "value_and_grad", argnums=argnums, copy=copy, target=target,
                    max_signatures=max_signatures)


def explain(fun, *args, **kwargs):
    """A report of how gradc compiles `fun` for these arguments (see gradc.explain module)."""
    from .report import explain as _explain
    return _explain(fun, *args, **kwargs)
