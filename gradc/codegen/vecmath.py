"""SIMD math for the generated loops, through glibc's libmvec.

Numba's loops call scalar libm for exp, log, tanh..., which LLVM cannot vectorize: a fused loop
with a tanh ran 3-4x slower than NumPy's SIMD ufuncs. LLVM's loop vectorizer does widen a call
that carries the attribute "vector-function-abi-variant" naming a vector version (the mechanism
behind `#pragma omp declare simd`); llvmlite's LLVM no longer takes the `-vector-library` option.
So while gradc compiles its kernels, each scalar math call in the LLVM IR that libmvec has vector
versions of gets that attribute (widest ISA the CPU has first), and the vector functions are
declared. Loops LLVM does not widen, and loop remainders, keep the scalar call. (The kernels'
exp is arithmetic instead, rt.emit_exp: libmvec's takes lanes below ~-87, a masked softmax's,
through scalar expf one at a time.)

libmvec's functions are accurate to <= 4 ulp and handle NaN, Inf and overflow (glibc's tests);
our own measurement on every 7th float32 bit pattern: exp 2.6, tanh 1.4, log 3.9, log1p 2.0,
expm1 2.3 ulp. Code compiled this way calls libmvec, so gradc keeps it in a cache directory of its
own (`tag()`), never loaded by a process without libmvec. `GRADC_VECMATH=0` turns it off.
"""
import contextlib
import ctypes
import os
import re

_LIBMVEC = "libmvec.so.1"

# A math call in Numba's LLVM IR: `call fast float @llvm.exp.f32(float %x)`, `@tanhf(...)`. Every
# such call whose libm function libmvec has vector versions of is marked: there is no table of
# function names to keep in step with the ops (np.arctan's atanf is found like exp's expf).
_CALL = re.compile(r'(call\b[^@\n=]*?\b(float|double)\s+@"?([A-Za-z_][\w.]*)"?\(([^()\n]*)\))')

# Numba names np.log2 and np.exp2 `@"llvm.log2"`, without the type suffix, which LLVM adds as
# it parses, after the rewrite: a variant attached to the unsuffixed name would name a function
# the call no longer calls. Suffix them first, in calls and declarations alike.
_UNSUFFIXED = re.compile(r'\b(float|double)(\s+)@"?llvm\.(\w+)"?\(')
_SUFFIX = {"float": "f32", "double": "f64"}

_state = {"variants": {}, "lib": None, "isas": None, "active": False, "patched": False}


def _isa_lanes(features):
    """[(ISA letter, float lanes, double lanes)] the CPU can run, widest first."""
    on = {f[1:] for f in features.split(",") if f.startswith("+")}
    isas = []
    if "avx512f" in on:
        isas.append(("e", 16, 8))
    if "avx2" in on:
        isas.append(("d", 8, 4))
    elif "avx" in on:
        isas.append(("c", 8, 4))
    isas.append(("b", 4, 2))  # SSE2, always there on x86-64
    return isas


def _libm_name(callee, ftype):
    """The libm function of a call: `llvm.exp.f32` -> expf, `llvm.pow.f64` -> pow, `tanhf`."""
    if not callee.startswith("llvm."):
        return callee
    parts = callee.split(".")
    if len(parts) != 3:
        return None
    return parts[1] + ("f" if ftype == "float" else "")


def _variant(callee, ftype, arity):
    """[(vector function, lanes)] libmvec exports for a call (widest ISA first; [] if none),
    looked up once per callee."""
    key = (callee, ftype, arity)
    if key not in _state["variants"]:
        base, found = _libm_name(callee, ftype), []
        for isa, n32, n64 in (_state["isas"] if base else ()):
            lanes = n32 if ftype == "float" else n64
            name = f"_ZGV{isa}N{lanes}{'v' * arity}_{base}"
            if hasattr(_state["lib"], name):
                found.append((name, lanes))
        _state["variants"][key] = found
    return _state["variants"][key]


def rewrite(ir):
    """Mark vectorizable math calls in LLVM IR text; declare the vector functions they name."""
    needed = {}

    def mark(m):
        call, ftype, callee, args = m.groups()
        arity = len(args.split(",")) if args.strip() else 0
        found = _variant(callee, ftype, arity) if arity else []
        if not found:
            return call
        for name, lanes in found:
            needed[name] = (ftype, lanes, arity)
        abi = ",".join(f"_ZGV_LLVM_N{lanes}{'v' * arity}_{callee}({name})" for name, lanes in found)
        return f'{call} "vector-function-abi-variant"="{abi}"'

    def suffix(m):
        ftype, space, name = m.groups()
        callee = f"llvm.{name}.{_SUFFIX[ftype]}"
        if not (_variant(callee, ftype, 1) or _variant(callee, ftype, 2)):
            return m[0]  # (only math functions libmvec has: all of one float type)
        return f"{ftype}{space}@{callee}("

    ir = _UNSUFFIXED.sub(suffix, ir)
    new = _CALL.sub(mark, ir)
    if not needed:
        return ir
    extra, used = [], []
    for name, (ftype, lanes, arity) in sorted(needed.items()):
        if not re.search(rf'@"?{re.escape(name)}"?\(', new):
            vt = f"<{lanes} x {ftype}>"
            extra.append(f"declare {vt} @{name}({', '.join([vt] * arity)}) nounwind")
        used.append(f"ptr @{name}")
    if "@llvm.compiler.used" not in new:  # keep the declarations until the vectorizer runs
        extra.append(f"@llvm.compiler.used = appending global [{len(used)} x ptr] "
                     f"[{', '.join(used)}], section \"llvm.metadata\"")
    return new + "\n" + "\n".join(extra) + "\n"


def enable():
    """Load libmvec and hook Numba's code generation (idempotent). False where unavailable."""
    if _state["patched"]:
        return True
    if os.environ.get("GRADC_VECMATH", "1") == "0":
        return False
    try:
        import llvmlite.binding as ll
        from numba.core import cgutils, codegen, config
        lib = ctypes.CDLL(_LIBMVEC)
        ll.load_library_permanently(_LIBMVEC)
        features = config.CPU_FEATURES or codegen.get_host_cpu_features()
        original = codegen.CPUCodeLibrary.add_ir_module
    except (OSError, ImportError, AttributeError):
        return False
    _state["lib"], _state["isas"] = lib, _isa_lanes(features)

    def add_ir_module(self, ir_module):
        if not _state["active"]:
            return original(self, ir_module)
        self._raise_if_finalized()
        module = ll.parse_assembly(rewrite(cgutils.normalize_ir_text(str(ir_module))))
        module.name = ir_module.name
        module.verify()
        self.add_llvm_module(module)

    codegen.CPUCodeLibrary.add_ir_module = add_ir_module
    _state["patched"] = True
    return True


@contextlib.contextmanager
def compiling():
    """Apply the rewrite to what Numba compiles inside this block (gradc's kernels only)."""
    if not _state["patched"]:
        yield
        return
    saved, _state["active"] = _state["active"], True
    try:
        yield
    finally:
        _state["active"] = saved


def tag():
    """A cache-directory tag: code built with libmvec calls lives apart from code without."""
    return "mvec" if _state["patched"] else "libm"
