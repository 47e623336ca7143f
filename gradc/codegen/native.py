"""Machine code for gradc's runtime loops (driver_rt.py's runner, pool_rt.py's pool) from their
LLVM IR, without Numba: LLVM's code generator alone, no IR passes. Every cold first step
compiles both, so their compile is part of every model's first step: through Numba's O3
pipeline the runner took 30-40 ms and the pool ~100 ms. Their IR is written as it should run
(no allocas to promote, nothing to inline); the code generator at `opt` does the rest.

The object file is kept beside the kernels (`prefix`_<sha256>.bin in the module directory,
named by the target machine, `opt` and `key`), with the sha256 of its bytes: a damaged,
truncated or foreign file is deleted and compiled again, never loaded."""
import hashlib
import os

_MAGIC = b"gradc native 1\n"


def native_engine(prefix, key, text_of, opt, stats):
    """An LLVM execution engine holding the machine code of the IR `text_of()` (called only on
    a cache miss), compiled for this CPU at code generator level `opt` (0-3), or read from the
    disk cache; counted in `stats` ({"compiled", "loaded"}). `key` names the IR (its text, or
    what decides it). Keep the engine for as long as its functions may run."""
    from llvmlite import binding as ll
    from numba.core.compiler_lock import global_compiler_lock

    from .modules import module_dir, read_checked, write_checked
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    cpu, features = ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten()
    name = f"{ll.get_process_triple()}\0{cpu}\0{features}\0{opt}\0{key}".encode()
    folder = module_dir()
    path = (os.path.join(folder, f"{prefix}_{hashlib.sha256(name).hexdigest()[:24]}.bin")
            if folder else None)
    with global_compiler_lock:  # (LLVM's global context is Numba's too: one thread at a time)
        machine = ll.Target.from_default_triple().create_target_machine(
            cpu=cpu, features=features, opt=opt, codemodel="jitdefault")
        code = read_checked(path, _MAGIC) if path else None
        stats["loaded" if code else "compiled"] += 1
        if code is None:
            code = machine.emit_object(ll.parse_assembly(text_of()))
            if path:
                try:
                    write_checked(path, _MAGIC, code)
                except OSError:
                    pass  # (uncached, but compiled)
        engine = ll.create_mcjit_compiler(ll.parse_assembly(""), machine)
        engine.add_object_file(ll.ObjectFileRef.from_data(code))
        engine.finalize_object()
    return engine
