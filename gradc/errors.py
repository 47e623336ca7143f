"""The GradcError hierarchy. Every error a user can cause names their file:line and what to do."""


# Called with each refusal (UnsupportedOpError, TracedBranchError) as it is made: gradc/trace.py
# keeps those made while a function is traced, to find the ones the function itself caught.
on_refusal = None


class GradcError(Exception):
    """Base class of every error gradc raises on purpose."""

    def __init__(self, message, source=None):
        self.source = source  # (no user frame: "<unknown>" says nothing, so it is left out)
        super().__init__(f"{source}: {message}" if source and source != "<unknown>"
                         else message)
        if on_refusal is not None and isinstance(self, (UnsupportedOpError, TracedBranchError)):
            on_refusal(self)


class UnsupportedOpError(GradcError):
    """A NumPy function or feature that gradc cannot trace or emit."""


class FrozenRandomError(UnsupportedOpError):
    """Random numbers drawn while a function is traced: they would be frozen into the compiled
    function, the same on every call. Draw them with `gradc.random`, or outside and pass them in."""


class ShapeError(GradcError, ValueError):
    """Shapes that do not fit together (broadcasting, matmul, reshape...). Also a ValueError,
    as NumPy raises for them (`try: x @ W except ValueError:` falls back alike)."""


class ArgumentError(GradcError, TypeError, ValueError):
    """Arguments NumPy itself would refuse: a missing, unexpected or repeated argument (NumPy's
    TypeError) or a value it does not take (NumPy's ValueError, such as an unknown `order=`)."""


class TracedBranchError(GradcError):
    """Python control flow (`if`, `while`, `bool()`, `float()`) on a traced value."""


class SignatureError(GradcError):
    """Arguments whose pytree structure, shape or dtype do not fit the compiled function."""


class NonDifferentiableError(GradcError):
    """A gradient asked of something that has none (non-scalar output, integer argument...)."""


class IndexOutOfRangeError(GradcError, IndexError):
    """An integer index (a label, an embedding id) outside its axis, found while the compiled
    function ran. Also an IndexError, as NumPy would raise."""


class NonFiniteError(GradcError):
    """A NaN or Inf found by `check_finite=True`."""


class CompileError(GradcError):
    """Code generation or Numba compilation failed; a bug in gradc, never the user's fault."""


class CacheWarning(UserWarning):
    """gradc's disk cache could not be used (not private to the user, or not writable): it
    caches elsewhere for this process, or in memory, and goes on."""


class ConstantArrayWarning(UserWarning):
    """A NumPy array read from outside a traced function's arguments (a global, a closure, an
    attribute of an object) was compiled in, so a later change to it is not seen: in a
    `gradc compile` module, or a view gradc cannot read again on every call
    (np.broadcast_to). Pass arrays that change as arguments."""


class TraceEffectWarning(UserWarning):
    """Traced code changed a Python number outside its arguments (`self.t += 1`): that happens
    once, when the function is traced, not on every call as in NumPy."""


class RecompileWarning(UserWarning):
    """A compiled function keeps compiling new signatures because a static (Python) value in
    its arguments keeps changing: pass it as an array so it is traced, or raise max_signatures."""
