"""`python -m gradc.codegen.compile_helper DIR CLAIMS NAME...`: compile generated modules into
Numba's disk cache for another process (gradc.codegen.modules.load_modules), which compiles the
others meanwhile and then loads these from the cache. Takes each module by creating its claim
file in CLAIMS, in the order given, and stops at the first one the other process has taken.
DIR is the other process's module directory (already checked by it); the modules are loaded as
it loads them (modules.load_from), so it can check the Numba files they leave."""
import os
import sys

from gradc.codegen import vecmath
from gradc.codegen.modules import claim, load_from


def main(folder, claims, names):
    vecmath.enable()  # as in the other process: the same code, the same cache directory
    for name in names:
        if not claim(claims, name):
            return
        with open(os.path.join(folder, name + ".py"), encoding="utf-8") as f:
            source = f.read()
        load_from(folder, name, source)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
