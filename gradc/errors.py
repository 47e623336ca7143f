"""The GradcError hierarchy. Every error a user can cause names their file:line and what to do."""


class GradcError(Exception):
    """Base class of every error gradc raises on purpose."""

    def __init__(self, message, source=None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class UnsupportedOpError(GradcError):
    """A NumPy function or feature that gradc cannot trace or emit."""


class FrozenRandomError(UnsupportedOpError):
    """Random numbers drawn while a function is traced: they would be frozen into the compiled
    function, the same on every call. Draw them with `gradc.random`, or outside and pass them in."""


class ShapeError(GradcError):
    """Shapes that do not fit together (broadcasting, matmul, reshape...)."""


class TracedBranchError(GradcError):
    """Python control flow (`if`, `while`, `bool()`, `float()`) on a traced value."""


class SignatureError(GradcError):
    """Arguments whose pytree structure, shape or dtype do not fit the compiled function."""


class NonDifferentiableError(GradcError):
    """A gradient asked of something that has none (non-scalar output, integer argument...)."""


class NonFiniteError(GradcError):
    """A NaN or Inf found by `check_finite=True`."""


class CompileError(GradcError):
    """Code generation or Numba compilation failed; a bug in gradc, never the user's fault."""
