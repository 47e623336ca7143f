"""Op definitions, one family per module; importing this package registers them all."""
from . import (conv, elementwise, indexing, lapack, linalg, math, movement, nn,  # noqa: F401
               random, reduction, scan, special)
from .registry import all_ops, get_op  # noqa: F401
