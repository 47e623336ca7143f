"""`python -m gradc.codegen.compile_helper DIR CLAIMS NAME...`: compile generated modules into
Numba's disk cache for another process (gradc.codegen.modules.load_modules), which compiles the
others meanwhile and then loads these from the cache. Takes each module by creating its claim
file in CLAIMS, in the order given, and stops at the first one the other process has taken."""
import importlib
import sys

from gradc.codegen import vecmath
from gradc.codegen.modules import claim


def main(folder, claims, names):
    sys.path.append(folder)
    vecmath.enable()  # as in the other process: the same code, the same cache directory
    for name in names:
        if not claim(claims, name):
            return
        with vecmath.compiling():
            importlib.import_module(name)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
