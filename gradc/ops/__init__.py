"""Op definitions, one family per module; importing this package registers them all."""
from . import (conv, elementwise, indexing, linalg, movement, nn, random, reduction,  # noqa: F401
               scan, special)
from .registry import all_ops, get_op  # noqa: F401
