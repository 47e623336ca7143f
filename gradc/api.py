"""The public entry points. Each works called directly or as a decorator (with or without
options): `gradc.grad(f)`, `@gradc.grad`, `@gradc.grad(argnums=1)`."""
import functools

from .function import Function


def jit(fun=None, *, target="cpu", max_signatures=None):
    """Compile `fun`'s forward: returns what `fun` returns (fresh arrays)."""
    if fun is None:
        return functools.partial(jit, target=target, max_signatures=max_signatures)
    return Function(fun, "jit", target=target, max_signatures=max_signatures)


def grad(fun=None, argnums=0, *, copy=False, target="cpu", max_signatures=None, has_aux=False):
    """Gradient of scalar `fun` with respect to argument(s) `argnums`, with the same pytree
    structure. Unless copy=True, the arrays are views of fixed buffers that the next call
    overwrites. has_aux=True: `fun` returns (loss, aux), aux a pytree of arrays computed in the
    same program; returns (grads, aux), aux views as the gradients are (unless copy=True)."""
    if fun is None:
        return functools.partial(grad, argnums=argnums, copy=copy, target=target,
                                 max_signatures=max_signatures, has_aux=has_aux)
    return Function(fun, "grad", argnums=argnums, copy=copy, target=target,
                    max_signatures=max_signatures, has_aux=has_aux)


def value_and_grad(fun=None, argnums=0, *, copy=False, target="cpu", max_signatures=None,
                   has_aux=False):
    """(value, gradients) of scalar `fun`; see `grad`. has_aux=True: ((value, aux), grads), as
    JAX returns them."""
    if fun is None:
        return functools.partial(value_and_grad, argnums=argnums, copy=copy, target=target,
                                 max_signatures=max_signatures, has_aux=has_aux)
    return Function(fun, "value_and_grad", argnums=argnums, copy=copy, target=target,
                    max_signatures=max_signatures, has_aux=has_aux)


def explain(fun, *args, **kwargs):
    """A report of how gradc compiles `fun` for these arguments (see gradc.explain module)."""
    from .report import explain as _explain
    return _explain(fun, *args, **kwargs)
