"""Op definitions, one family per module; importing this package registers them all."""
from . import (conv, elementwise, indexing, linalg, math, movement, nn, random,  # noqa: F401
               reduction, scan, special)
from .registry import all_ops, get_op  # noqa: F401
