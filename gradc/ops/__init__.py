"""Op definitions, one family per module; importing this package registers them all."""
from . import conv, elementwise, indexing, lapack, linalg, movement, nn, random, reduction  # noqa: F401
from .registry import all_ops, get_op  # noqa: F401
