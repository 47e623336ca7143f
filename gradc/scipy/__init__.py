"""SciPy functions for traced code: import gradc.scipy.linalg (the submodules are imported by name,
so this package imports nothing)."""
