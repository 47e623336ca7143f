"""The NumPy functions traced code may call beyond the core ones of gradc/trace.py, one module per
family (statistics, building arrays, contractions, linear algebra...). Each module has a
`FUNCTIONS` table, {NumPy function: implementation}; an implementation takes NumPy's own parameter
names, since a call is bound against the NumPy function's signature first (trace._bind), and
builds the result from gradc.ops.fn. gradc/trace.py merges the tables (`tables()`), which also
makes the README's supported list (`make readme`).
"""
import importlib
import pkgutil


def tables():
    """{NumPy function: implementation} of every family module here."""
    merged = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        family = importlib.import_module(f"{__name__}.{module.name}")
        overlap = merged.keys() & family.FUNCTIONS.keys()
        if overlap:
            raise ValueError(f"{module.name} implements {sorted(f.__name__ for f in overlap)} again")
        merged.update(family.FUNCTIONS)
    return merged
