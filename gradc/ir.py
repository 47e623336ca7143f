"""The IR: a flat, typed SSA graph, in the manner of a jaxpr.

A `Graph` holds its `inputs`, an ordered list of `Node`s (each node's inputs come before it) and
its `outputs`. Every `Value` has a static shape and dtype; broadcasting is an explicit
`broadcast_to` node. Nodes are hash-consed when built: applying the same op with the same
attributes to the same inputs twice returns the first value (CSE at construction).

Values double as tracers: the NumPy operators and protocols on `Value` build nodes, so model code,
VJP rules and rewrites all read like NumPy (see `gradc.ops.fn` and `gradc.trace`).
"""
from __future__ import annotations

import abc
import contextlib
import functools
import gc
import math
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np


# dtypes that graph values (and so inputs) may have; the CPU kernels have buffers of these
SUPPORTED_DTYPES = tuple(np.dtype(d) for d in ("float32", "float64", "int32", "int64", "bool",
                                                "uint8", "int8", "int16", "uint16"))


_set = object.__setattr__  # (how gradc sets a Value's fields: Value.__setattr__ refuses)


def _users_code(frame):
    """Whether `frame` runs the user's code, or NumPy's Python code the user's calls
    (np.isscalar(s))."""
    kind = _kind_of_file(frame.f_code.co_filename)
    while kind in ("numpy", "abc") and frame.f_back is not None:  # (isinstance(s,
        # numbers.Number) asks through abc.py's __instancecheck__)
        frame = frame.f_back
        kind = _kind_of_file(frame.f_code.co_filename)
    return kind == "user"


@functools.lru_cache(maxsize=1024)
def _kind_of_file(filename):
    from .trace import _NUMPY_DIR, _frame_kind
    if os.path.abspath(filename).startswith(_NUMPY_DIR + os.sep):
        return "numpy"
    if filename in (abc.__file__, "<frozen abc>"):
        return "abc"
    return _frame_kind(filename)


class Value:
    """One SSA value: a static shape and dtype, owned by the graph that made it."""

    __slots__ = ("graph", "id", "shape", "dtype", "node", "name")
    __array_priority__ = 1000

    @property
    def __class__(self):
        """np.ndarray, for isinstance() in the user's code: a traced value stands for an array
        (`x * 2 if isinstance(x, np.ndarray) else x + 100` took the other branch); a 0-d one
        that stands for a NumPy scalar (x.sum(), a float argument), to the user's code, that
        scalar's type (np.float64: `isinstance(s, float)`, np.isscalar(s) are NumPy's True).
        type(x) is still Value."""
        if not self.shape and self.id not in self.graph.zero_d_arrays and _users_code(
                sys._getframe(1)):
            return float if self.id in self.graph.weak else self.dtype.type  # (a Python float
            # argument: no np.generic)
        return np.ndarray

    def __init__(self, graph, vid, shape, dtype, node=None, name=None):
        _set(self, "graph", graph)
        _set(self, "id", vid)
        _set(self, "shape", tuple(int(d) for d in shape))
        _set(self, "dtype", np.dtype(dtype))
        _set(self, "node", node)  # the node that produced it; None for a graph input
        _set(self, "name", name)

    def __setattr__(self, name, value):
        """A value is immutable once made (gradc sets its fields through `_set`): the user's
        `h.shape = (9,)` reshaped it under its node, whose kernel then read another size."""
        if isinstance(getattr(type(self), name, None), property):  # (.real's setter: refused)
            return _set(self, name, value)
        if name == "shape":  # (NumPy's reshape in place of a contiguous array: surface.py)
            from .surface import set_shape
            return set_shape(self, value)
        from .errors import UnsupportedOpError
        from .trace import user_source
        what = {"dtype": "reinterprets the array's bytes in place: convert with x.astype(...)"}
        raise UnsupportedOpError(f"x.{name} = ... on a traced array: "
                                 + what.get(name, "traced arrays are immutable"),
                                 source=user_source())

    # --- static facts ------------------------------------------------------------------------
    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return math.prod(self.shape)  # (shape holds Python ints)

    def __len__(self):
        if not self.shape:  # (NumPy's TypeError: a 0-d array has no length)
            from .errors import ArgumentError
            from .trace import user_source
            raise ArgumentError("len() of a 0-d traced value (an array of no dimensions: a "
                                "sum, a mean, a scalar argument); NumPy raises TypeError too: "
                                "use x.size or x.shape", source=user_source())
        return self.shape[0]

    @property
    def type_str(self):
        return type_str(self.shape, self.dtype)

    def __repr__(self):
        return f"%{self.id}:{self.type_str}"

    # The NumPy-like surface (operators, methods, ufunc and function protocols) lives in
    # gradc.trace, which installs it on this class; it is the same surface VJP rules use.


def _attr_key(value):
    """A hash key for attributes that keeps apart what == would merge: 0.0 and -0.0 (floats by
    repr), NaN and -NaN; arrays compare by content through ConstArray's own equality."""
    if type(value) in _PLAIN_ATTRS:  # (most attributes: a quick way out)
        return value
    if isinstance(value, float):  # (a NaN's sign too: np.copysign reads it)
        return ("float", repr(value), math.copysign(1.0, value) if value != value else 1.0)
    if isinstance(value, tuple):
        return tuple(_attr_key(v) for v in value)
    return value


_PLAIN_ATTRS = frozenset({int, bool, str, type(None)})


def type_str(shape, dtype):
    short = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool",
             "float16": "f16", "int8": "i8", "uint8": "u8"}.get(np.dtype(dtype).name, np.dtype(dtype).name)
    return f"{short}[{','.join(str(d) for d in shape)}]"


@dataclass(eq=False)
class Node:
    op: str
    inputs: tuple
    attrs: tuple  # sorted (name, value) pairs of hashable static parameters
    output: Value
    source: str  # the user's "file:line" that created it
    # _attr_key(attrs), made once: every replay of the node hash-conses it again (a pass's
    # rebuild of a 50k-node graph spent a third of its time remaking these keys)
    attr_key: tuple = ()
    # the op's OpDef, given when the node is made (the passes ask for it millions of times on
    # long graphs; a cached_property's lookup took a lock each time)
    opdef: object = None

    @property
    def attr(self):
        return dict(self.attrs)


# what a refusal of an update through a reshape of a transposed or strided view adds
LAYOUT_HINT = (". (The update went through a reshape or ravel of a transposed or strided view, "
               "which NumPy copies or views depending on the memory layout of the array "
               "viewed; gradc takes it as a view in every case: write .copy() after the "
               "reshape where you mean a copy)")


class Graph:
    """A graph under construction and, when finished, the IR itself.

    `apply` is the one way nodes are made: it checks the op's shape/dtype rule and hash-conses.
    """

    def __init__(self):
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self._next_id = 0
        self._memo: dict = {}
        self.source = "<gradc>"  # source line stamped on new nodes
        self.merged = 0  # how many node constructions hash-consing merged
        # While tracing user code, each new node is stamped with the user's file:line; passes
        # and VJP rules turn this off and stamp the source of the node they come from. Set
        # through `stamping_user_source` only.
        self.stamp_user_source = False
        self.tracing = False  # the user's code runs on this graph's values (trace.py)
        # output index -> input index: that output is written into that input's own buffer
        # (a train step's new parameters and optimizer state), never into the arena
        self.aliases = {}
        # ids of weakly typed values (while tracing): a Python float traced as an input, and
        # Python arithmetic on it; they take the dtype of the arrays they meet, as NumPy's do
        self.weak = set()
        # ids of values that are NumPy views of another array (while tracing: basic indexing,
        # transposes, reshapes...): `x += y` on one is refused (surface.py), for NumPy would
        # write into the array it views; views_of: base id -> its views
        self.views = set()
        self.views_of = {}
        self.view_base = {}  # view id -> the value it views (while tracing)
        # view id -> the basic index (a tuple) it was taken with, `r = x[0]`: a store into r
        # is made in x too (surface.py's _setitem), as NumPy's r writes into x's memory
        self.view_keys = {}
        self.unfollowed = set()  # ids of views of a NumPy array the trace made, not followed
        self.nested = 0  # surface calls inside a surface call (trace.traced): gradc's own
        self.in_range = set()  # ids of positions in range by construction (np.argmax's)
        self.read_only = set()  # ids of views NumPy makes read-only (np.broadcast_to...)
        # ids of reshapes (ravels, np.ascontiguousarray) of a transposed or strided view, which
        # NumPy copies or views by the memory layout of the array viewed: gradc takes them as
        # views, and its refusals of an update through one say so (surface.py)
        self.layout_views = set()
        self.stale_through_layout = set()  # stale ids retired through one of those
        # ids of 0-d values that are NumPy 0-d arrays (np.array(s), a copy, a view, np.where's
        # result...), which `x += y` writes into, as other arrays; other 0-d values are NumPy
        # scalars (what ufuncs, operators and reductions return), bound anew by `x += y`
        self.zero_d_arrays = set()
        # id -> the line of the `x += y` that changed it, or the array it views (while
        # tracing): NumPy would show the change and gradc cannot, so a later use is refused
        # (surface.py _written_back)
        self.stale = {}
        # ids of inputs given as numbers (Python or NumPy scalars), immutable in NumPy too
        self.scalar_inputs = set()
        # id -> (the root, what it is the square root of) of the square roots gradc takes of a
        # sum of squares (np.linalg.norm, np.std), while tracing: fn.square_of squares them back
        self.square_roots = {}
        # id -> NumPy array made a constant while tracing (fn.as_value; kept: its id stays its
        # own), for the arrays a traced function reads from outside its arguments (trace.py)
        self.constant_arrays = {}
        # with capturing on (while tracing), float arrays read from outside the arguments become
        # inputs read on every call (gradc/capture.py): `outside`, the trace's walk that finds
        # them (an outside.OutsideWalk; None: capturing off), id -> input value, and the
        # Captures (kept by the passes: the inputs stay where they are)
        self.outside = None
        # id -> (an outside array, its new value) of those a trace updated in place through a
        # dict entry (`params["W"] -= lr * g`): read as the new value after, written into
        # after each call (outside.Stored.into)
        self.in_place = {}
        self.in_place_results = {}  # id(value) -> id(array): each value an update gave it
        # id(value) -> (refusal, source): `p["W"] -= g` of an argument's entry, refused where the
        # value is written back into the caller's dict (NumPy writes into the caller's array)
        self.argument_updates = {}
        self.stored_text = ""  # what the trace stored outside with NumPy (outside.stored_text)
        self.given_paths = {}  # id -> steps of what the traced function was given (trace.py)
        self.changed_after = []  # (array, its contents) changed at its update in place while
        # capture.read_after_update traces
        self.captured = {}
        self.captures = []
        self.guards = []  # [(name, value, outside.Path)]: values read from outside, compiled in
        self.names_run = None  # what the lines the trace ran read, where recorded (frozen.py)
        self.numpy_read = frozenset()  # {(id(root), steps)}: capture.read_by_numpy's finds
        self.updated = frozenset()  # ids of the outside arrays the trace updated in place
        # [outside.Stored]: traced values assigned outside (`self.cache = x`), the last outputs:
        # written there after each call (gradc/function.py)
        self.write_backs = []
        self.outside_leaves = {}  # id -> outside.Outside: arrays from outside among them
        self.moved = frozenset()  # ids of the arrays from outside written back as themselves
        self.live_paths = self.read_live = ()  # (gradc/live.py: function._trace_joint_live)
        # value id -> its (base, offset, strides) through views (passes/fuse.py base_layout):
        # a value's node never changes, so it is found once; fusion asks ~40 times per node
        self.layouts = {}

    def _new_value(self, shape, dtype, node=None, name=None):
        v = Value(self, self._next_id, shape, dtype, node, name)
        self._next_id += 1
        return v

    def add_input(self, shape, dtype, name=None):
        v = self._new_value(shape, dtype, name=name)
        self.inputs.append(v)
        return v

    def apply(self, op, inputs, **attrs):
        from .ops.registry import get_op
        opdef = get_op(op)
        inputs = tuple(inputs)
        for v in inputs:
            if v.graph is not self:
                raise ValueError(f"{op}: input {v} belongs to another graph")
            if self.stale and v.id in self.stale:
                self.refuse_stale(v)
        attrs_t = tuple(sorted(attrs.items()))
        attr_key = _attr_key(attrs_t)
        key = (op, tuple(v.id for v in inputs), attr_key)
        # (not while the user's code is traced: two equal expressions there are two NumPy
        # arrays, `a = x.copy(); c = x.copy(); a += 1` must leave c and its views as they
        # are; the passes' cse merges them after)
        hit = None if self.tracing else self._memo.get(key)
        if hit is not None:
            self.merged += 1
            return hit
        shape, dtype = opdef.infer(inputs, **attrs)
        node = Node(op, inputs, attrs_t, None, self.source, attr_key, opdef)
        out = self._new_value(shape, dtype, node=node)
        node.output = out
        self.nodes.append(node)
        self._memo[key] = out
        return out

    def retire(self, value, source):
        """`value` (an array x of `x += y`, or a view of it) was changed in place at `source`:
        NumPy's shows the change, so a later use of this value is refused. (While tracing no
        expression is looked up again in _memo: an equal one made after is a value of its own.)"""
        self.stale[value.id] = source

    def refuse_stale(self, value, reader="this line reads"):
        from .errors import UnsupportedOpError
        from .trace import user_source  # (the line that reads: the graph's may be gradc's)
        what = (f"a view ({value.type_str}: a slice, a transpose, a reshape...) of an array"
                if value.id in self.views else f"an array ({value.type_str})")
        raise UnsupportedOpError(
            f"{reader} {what} that an in-place operator or a store (x[i] = v) changed afterwards, at "
            f"{self.stale[value.id]}, through a view of it other than basic indexing's (a "
            "transpose, a reshape): NumPy would read the changed values, which gradc follows "
            "only through views by basic indexing. Read the updated name, take the view "
            "after the update, update the array itself (x = gradc.at(x)[index].add(y), "
            ".multiply, .set...), or write x = x + y where the other name should keep the old "
            "values" + (LAYOUT_HINT if value.id in self.stale_through_layout else ""),
            source=self.source if self.source != "<gradc>" else user_source())

    def take_over(self, handle, new):
        """`x[i] = v` while tracing: the Python object `handle` (the one the user's names, lists
        and attributes hold, as they hold NumPy's one array object) stands for `new`, the
        updated array, from now on; the value it stood for goes on under a new object, which
        this returns, for the nodes that read it and the views taken of it."""
        if new is handle:
            return handle
        if handle.node is None:  # (an input: surface.py refuses the store first)
            raise ValueError(f"{handle} is an input of the graph; inputs are never written")
        old = Value(self, handle.id, handle.shape, handle.dtype, handle.node, handle.name)
        for node in reversed(self.nodes):  # (its readers come after its node)
            if any(v is handle for v in node.inputs):
                node.inputs = tuple(old if v is handle else v for v in node.inputs)
            if node is handle.node:
                break
        for value, into in ((old, handle), (handle, new)):  # (hash-consing's table too)
            node = into.node
            node.output = value
            self._memo[(node.op, tuple(v.id for v in node.inputs), node.attr_key)] = value
        base = self.view_base.get(handle.id)
        if base is not None:  # (handle a view: its base's list of views)
            self.views_of[base.id] = [old if v is handle else v
                                      for v in self.views_of.get(base.id, ())]
        for view in self.views_of.get(handle.id, ()):
            self.view_base[view.id] = old
        for rid, (root, what) in list(self.square_roots.items()):
            self.square_roots[rid] = (old if root is handle else root,
                                      old if what is handle else what)
        if handle.id in self.zero_d_arrays:
            self.zero_d_arrays.add(new.id)
        for field in ("id", "shape", "dtype", "node"):
            _set(handle, field, getattr(new, field))
        base = self.view_base.get(new.id)
        if base is not None:  # (new a view: handle stands for it in its base's list of views)
            self.views_of[base.id] = [handle if v is new else v
                                      for v in self.views_of.get(base.id, ())]
        return old

    def rebuild(self, node, inputs):
        """`node` of another graph made again here on `inputs`, values of this graph of the same
        shapes and dtypes as its own: what `apply` would return, without checking again what
        the node's making checked (its shape rule) or remaking its attributes' key."""
        key = (node.op, tuple(v.id for v in inputs), node.attr_key)
        hit = self._memo.get(key)
        if hit is not None:
            self.merged += 1
            return hit
        new = Node(node.op, inputs, node.attrs, None, self.source, node.attr_key, node.opdef)
        old = node.output
        out = Value.__new__(Value)  # (shape and dtype are already normalized: see Value)
        _set(out, "graph", self)  # (one call per field: this runs for every node of a pass)
        _set(out, "id", self._next_id)
        _set(out, "shape", old.shape)
        _set(out, "dtype", old.dtype)
        _set(out, "node", new)
        _set(out, "name", None)
        self._next_id += 1
        new.output = out
        self.nodes.append(new)
        self._memo[key] = out
        return out

    @contextlib.contextmanager
    def stamping_user_source(self, on):
        """Within: nodes made through the NumPy surface are (on) or are not (off) stamped with the
        user's file:line (gradc/trace.py `traced`); the previous setting after."""
        saved, self.stamp_user_source = self.stamp_user_source, on
        try:
            yield
        finally:
            self.stamp_user_source = saved

    @contextlib.contextmanager
    def at_source(self, source):
        saved = self.source
        self.source = source
        try:
            yield
        finally:
            self.source = saved

    def __str__(self):
        return format_graph(self)


_PAUSES = threading.Lock()
_paused = [0, False]  # compiles under way in gc_paused; whether the collector was on before


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off while gradc builds and rewrites graphs (tracing,
    autodiff, the passes, fusion, the plan, code generation), on again after the last such
    compile in any thread ends, unless it was off before. A graph is millions of small objects
    that live until the compile ends, and each full collection walks all of them: on a 50k-node
    graph 26 full collections were a third of the compile (6 s of 18), more per node the longer
    the graph. The graphs a compile is done with are released (`release`: freed at once by
    reference counting), so the collection that follows finds little. The load (LLVM, and
    Numba's few kernels) runs paused too: Numba's garbage waits for that collection (on the
    GRADC_KERNELS=numba route, ~40 MB more at the peak of a cold GPT block's compile)."""
    with _PAUSES:
        if _paused[0] == 0:
            _paused[1] = gc.isenabled()
            gc.disable()
        _paused[0] += 1
    try:
        yield
    finally:
        with _PAUSES:
            _paused[0] -= 1
            if _paused[0] == 0 and _paused[1]:
                gc.enable()


def format_attr(value):
    if isinstance(value, np.dtype):
        return value.name
    return repr(value)


def format_graph(graph, title=None):
    """Print like a jaxpr: one equation a line with its type and the user's source line."""
    lines = []
    if title:
        lines.append(f"# {title}")
    ins = ", ".join(f"%{v.id}:{v.type_str}" + (f" ({v.name})" if v.name else "") for v in graph.inputs)
    lines.append(f"{{ lambda {ins} .")
    for n in graph.nodes:
        args = " ".join(f"%{v.id}" for v in n.inputs)
        attrs = " ".join(f"{k}={format_attr(v)}" for k, v in n.attrs)
        rhs = " ".join(p for p in (n.op, attrs, args) if p)
        eq = f"  %{n.output.id}:{n.output.type_str} = {rhs}"
        lines.append(f"{eq:<60}  # {n.source}")
    lines.append("  in (" + ", ".join(f"%{v.id}" for v in graph.outputs) + ") }")
    return "\n".join(lines)


def replay(graph, rewrite=None, outputs=None, order=None):
    """Rebuild `graph` node by node into a fresh graph (hash-consing merges duplicates).

    `rewrite(new_graph, node, new_inputs)` may return a replacement value for a node, or None to
    rebuild it unchanged. Only nodes that the outputs need are rebuilt, so replay is also DCE.
    `order`: the nodes in another topological order than graph.nodes' (a replacement that reads
    values made after the node it replaces: passes/products.py stack_products).
    Returns the new graph; its inputs correspond one to one with the old graph's inputs.
    """
    live = live_nodes(graph, outputs if outputs is not None else graph.outputs)
    new = Graph()
    env = {}
    for v in graph.inputs:
        env[v.id] = new.add_input(v.shape, v.dtype, name=v.name)
    default_source = new.source
    for node in graph.nodes if order is None else order:
        if node.output.id not in live:
            continue
        ins = tuple(env[v.id] for v in node.inputs)
        new.source = node.source  # (what at_source does, without a context manager per node)
        out = rewrite(new, node, ins) if rewrite else None
        if out is None:  # its inputs have their old types (checked below): so has it
            out = new.rebuild(node, ins)
        elif out.shape != node.output.shape or out.dtype != node.output.dtype:
            raise AssertionError(f"rewrite of {node.op} changed its type: {out} vs {node.output}")
        env[node.output.id] = out
    new.source = default_source
    new.outputs = [env[v.id] for v in (outputs if outputs is not None else graph.outputs)]
    new.aliases = dict(graph.aliases) if outputs is None else {}
    new.captures = list(graph.captures)  # (the same inputs, in the same places)
    new.guards = graph.guards
    new.names_run = graph.names_run
    new.numpy_read = graph.numpy_read
    new.updated = graph.updated
    return new


def release(graph):
    """Break `graph`'s reference cycles (a graph holds its nodes, each node its output, each
    value its graph and node), so that reference counting frees it as soon as nothing else
    holds it, without the cyclic collector. Only for a graph no one will read again."""
    for node in graph.nodes:
        node.output = None
    graph.nodes, graph.inputs, graph.outputs = [], [], []
    graph._memo, graph.layouts = {}, {}


def live_nodes(graph, outputs):
    """Ids of the values that `outputs` depend on."""
    live = {v.id for v in outputs}
    for node in reversed(graph.nodes):  # (a node's inputs come before it: one sweep back)
        if node.output.id in live:
            live.update(v.id for v in node.inputs)
    return live


def consumers(graph):
    """Map value id -> list of nodes that read it."""
    users = {}
    for n in graph.nodes:
        for v in n.inputs:
            users.setdefault(v.id, []).append(n)
    return users
