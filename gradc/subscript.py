"""NumPy arrays indexed by traced values: `self.C[X]`, `W_emb[idx]`, `P[xs, ys]`.

`table[i]` is NumPy's own indexing when `table` is a NumPy array (weights on the model, a
global, a table the function computed with NumPy), and NumPy's indexing cannot take a traced
index: it asks the index for an array, which a traced value has no numbers for until the
compiled function runs. Python gives the index no say (there is no reflected __getitem__), so
while a trace runs, the subscript slot of np.ndarray (the C function BINARY_SUBSCR calls) is a
small native function built here with llvmlite: it calls NumPy's own function unless the index
is a traced value or a tuple holding one, and then `_traced_index(table, index)`, which indexes
the table as a graph value: read on every call where it is an array from outside (as a traced
`X @ self.W` reads W), a constant where NumPy made it in the trace.

Only the exact np.ndarray type is covered (a subclass, np.memmap, keeps its own copy of the
slot): there, and where the slot cannot be checked (`_available`: another Python build), NumPy's
indexing refuses the traced index by name, as before. Outside traces the slot is NumPy's: the
native function is swapped in by the first trace running (in any thread) and out by the last.
Other threads' NumPy indexing meanwhile pays one type check."""
from __future__ import annotations

import ctypes
import sys

import numpy as np

from .ir import Value

_POINTER = ctypes.sizeof(ctypes.c_void_p)
# PyTypeObject's tp_as_mapping (after the object header, tp_name ... tp_as_sequence) and a slot
# wrapper's d_wrapped (after the object header, d_type, d_name, d_qualname, d_base): the layout
# of every CPython 3; `_available` checks the two agree on np.ndarray before anything is written
_AS_MAPPING = 14 * _POINTER
_D_WRAPPED = 6 * _POINTER
_NUMPY_GETITEM = np.ndarray.__getitem__  # (the slot wrapper: NumPy's own function, always)

_state = {}  # "engine", "mapping" (our PyMappingMethods), "numpy" (NumPy's), "slot"


def _read_pointer(address):
    return ctypes.c_void_p.from_address(address).value


def _traced_index(table, index):
    """`table[index]` met by the native slot: gradc's indexing where a user's trace asked for
    it, NumPy's (and its refusal of the traced index, by name) anywhere else."""
    from .errors import GradcError
    from .ops import fn
    from .trace import _user_frame, current_graph, user_source  # (they build on this module's
    like = index if isinstance(index, Value) else next(  # users)
        (i for i in index if isinstance(i, Value)), None)
    if like is None or current_graph() is None or _user_frame()[1] is not None:
        return _NUMPY_GETITEM(table, index)
    try:
        table = fn.as_value(table, like)
    except GradcError as e:  # (a complex or text table: its refusal names the line)
        if e.source:
            raise
        raise type(e)(str(e), source=user_source()) from None
    return table[index]


def _build(numpy_subscript):
    """The native subscript function's address (an LLVM function of two object pointers)."""
    import llvmlite.binding as llvm
    import llvmlite.ir as ir
    from numba.core.compiler_lock import global_compiler_lock

    i8p, i64, i32 = ir.IntType(8).as_pointer(), ir.IntType(64), ir.IntType(32)
    module = ir.Module("gradc_subscript")
    slot_type = ir.FunctionType(i8p, [i8p, i8p])
    f = ir.Function(module, slot_type, "subscript")
    table, index = f.args
    blocks = {name: f.append_basic_block(name)
              for name in ("entry", "tuple", "items", "item", "traced", "numpy")}
    b = ir.IRBuilder(blocks["entry"])

    def address(value, type_):
        return b.inttoptr(ir.Constant(i64, value), type_)

    def field(obj, offset, type_):  # (the field at a byte offset of an object)
        return b.load(b.bitcast(b.gep(obj, [offset]), type_.as_pointer()))

    def is_traced(obj):  # (PyType_IsSubtype(type(obj), Value))
        is_subtype = address(ctypes.cast(ctypes.pythonapi.PyType_IsSubtype, ctypes.c_void_p).value,
                             ir.FunctionType(i32, [i8p, i8p]).as_pointer())
        kind = field(obj, ir.Constant(i64, _POINTER), i8p)
        return b.icmp_signed("!=", b.call(is_subtype, [kind, address(id(Value), i8p)]),
                             ir.Constant(i32, 0)), kind

    traced, kind = is_traced(index)
    b.cbranch(traced, blocks["traced"], blocks["tuple"])
    b.position_at_end(blocks["tuple"])  # (an exact tuple: x[i, j], x[:, i])
    b.cbranch(b.icmp_unsigned("==", kind, address(id(tuple), i8p)), blocks["items"],
              blocks["numpy"])
    b.position_at_end(blocks["items"])
    size = field(index, ir.Constant(i64, 2 * _POINTER), i64)  # (ob_size)
    b.branch(blocks["item"])
    b.position_at_end(blocks["item"])
    n = b.phi(i64)
    n.add_incoming(ir.Constant(i64, 0), blocks["items"])
    check = f.append_basic_block("check")
    b.cbranch(b.icmp_signed(">=", n, size), blocks["numpy"], check)
    b.position_at_end(check)
    offset = b.add(ir.Constant(i64, 3 * _POINTER), b.mul(n, ir.Constant(i64, _POINTER)))
    traced, _ = is_traced(field(index, offset, i8p))  # (ob_item[n])
    n.add_incoming(b.add(n, ir.Constant(i64, 1)), check)
    b.cbranch(traced, blocks["traced"], blocks["item"])
    b.position_at_end(blocks["numpy"])
    b.ret(b.call(address(numpy_subscript, slot_type.as_pointer()), [table, index], tail=True))
    b.position_at_end(blocks["traced"])  # (PyObject_CallFunctionObjArgs(hook, table, index,
    call = address(ctypes.cast(ctypes.pythonapi.PyObject_CallFunctionObjArgs,  # NULL): a new
                               ctypes.c_void_p).value,  # reference, or NULL with the error set)
                   ir.FunctionType(i8p, [i8p], var_arg=True).as_pointer())
    b.ret(b.call(call, [address(id(_traced_index), i8p), table, index, ir.Constant(i8p, None)]))

    with global_compiler_lock:  # (LLVM's global context is Numba's too: one thread at a time)
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        parsed = llvm.parse_assembly(str(module))  # (the addresses are this process's: no
        parsed.verify()  # disk cache; it compiles in about a millisecond)
        machine = llvm.Target.from_default_triple().create_target_machine(
            codemodel="jitdefault")
        engine = llvm.create_mcjit_compiler(parsed, machine)
        engine.finalize_object()
    _state["engine"] = engine  # (its code lives as long as the engine)
    return engine.get_function_address("subscript")


def _available():
    """Whether the slot can be swapped: CPython with the GIL, and np.ndarray's subscript slot
    where this module reads it (the slot wrapper's function is the same)."""
    if "slot" in _state:
        return _state["slot"] is not None
    _state["slot"] = None
    if (sys.implementation.name != "cpython" or _POINTER != 8
            or not getattr(sys, "_is_gil_enabled", lambda: True)()):
        return False
    try:
        mapping = _read_pointer(id(np.ndarray) + _AS_MAPPING)
        numpy_subscript = _read_pointer(mapping + _POINTER)
        if numpy_subscript != _read_pointer(id(np.ndarray.__dict__["__getitem__"]) + _D_WRAPPED):
            return False
        ours = (ctypes.c_void_p * 3)(_read_pointer(mapping), _build(numpy_subscript),
                                     _read_pointer(mapping + 2 * _POINTER))
    except Exception:  # noqa: BLE001 - (no llvmlite JIT here: NumPy's indexing, refusing)
        return False
    _state.update(mapping=ours, numpy=mapping,
                  slot=ctypes.c_void_p.from_address(id(np.ndarray) + _AS_MAPPING))
    return True


def install():
    """Swap the native slot in (literals.numpy_constructors: as the first trace running
    begins, in any thread)."""
    if _available():
        _state["slot"].value = ctypes.addressof(_state["mapping"])


def remove():
    """NumPy's slot back (as the last trace running ends)."""
    if _state.get("slot") is not None:
        _state["slot"].value = _state["numpy"]
