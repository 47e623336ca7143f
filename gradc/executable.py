"""A compiled signature at run time: its arena, its driver, and the call that hands the
caller's arrays to the driver (`Compiled.run`), with the checks that keep that right: memory that
overlaps what the driver writes is read from a copy, and a kernel's index out of range is raised
as an IndexOutOfRangeError that names the caller's line."""
from __future__ import annotations

import ctypes
import functools
import math
import re
import threading
from typing import NamedTuple

import numpy as np

from . import forks
from .capture import NO_CAPTURES, OUTSIDE_READS, CaptureChanged
from .codegen import driver_rt
from .errors import IndexOutOfRangeError, SignatureError
from .last_call import LastCall, data_address
from .standalone.calls import byte_span
from .trace import user_source


def index_gathers(graph):
    """{(op, source): [(name of the indices' input, size of the axis)]} of the nodes of `graph`
    that check their indices (what index_error_reporter needs of it). One line may check
    several: x[i, j] checks i against x's rows and j against its columns, then gathers from the
    flattened x at the positions they give (which cannot be out of range then)."""
    gathers = {}
    for node in graph.nodes:
        if node.opdef.checks_indices:
            axis = node.attr["axis"]
            size = node.attr["size"] if "size" in node.attr else node.inputs[0].shape[axis]
            found = gathers.setdefault((node.op, node.source), [])
            # (gradc.nn.cross_entropy's labels, negatives mapped out of range: [0, size))
            labels = _negatives_refused(node.inputs[1])
            low = -size if labels is None else 0
            name = _input_name(node.inputs[1] if labels is None else labels)
            if (name, size, low) not in found:
                found.append((name, size, low))
    return gathers


def index_error_reporter(gathers, in_place):
    """`report(error, frame=None)`: the IndexOutOfRangeError for a kernel's IndexError "index
    out of range in OP (SOURCE)" (or "in OP at SOURCE") of a graph whose `index_gathers` are
    `gathers`: the caller's line (from `frame`), which input holds the indices and their valid
    range. `in_place`: the graph writes inputs in place (a train step, whose schedule checks
    indices before: passes/fuse.py)."""

    def report(error, frame=None):
        message = str(error).removeprefix("gradc: ")
        found = re.search(r"in (\w+) (?:\((.*)\)|at (.*))$", message)
        checked = gathers.get((found[1], found[2] or found[3]), []) if found else []
        named = [c for c in checked if c[0] != "an input"] or checked
        if named:
            message += ": " + " or ".join(f"{name} holds an index outside [{low}, {size})"
                                          for name, size, low in named)
        if in_place:
            message += "; the parameters and the optimizer state are unchanged"
        return IndexOutOfRangeError(message, source=user_source(frame))

    return report


def reporting_index_errors(run, report):
    """`run` with its IndexError raised as `report(error)` instead."""
    @functools.wraps(run)
    def reporting(*args):
        try:
            return run(*args)
        except IndexError as e:
            raise report(e) from None

    return reporting


class Layout(NamedTuple):
    """What an executable needs of a lowered program besides its code, as plain data (the
    program cache keeps it: gradc/program_cache.py): the inputs' and outputs' types, each
    output's byte offset in the arena (None: written in place into an input), the arena's size,
    the outputs' region, the constants to copy in once (offset, array), the index checks'
    `index_gathers`, whether the program writes inputs in place, its number of kernels, and per
    output, the index of the output whose new array it is written into (plan.fresh; None: the
    arena's or an input's)."""
    inputs: list  # [(shape, dtype)]
    outputs: list  # [(offset or None, shape, dtype)]
    arena_bytes: int
    output_bytes: int
    constants: list  # [(offset, array)]
    gathers: dict
    in_place: bool
    kernels: int
    fresh: list  # [output index or None]

    @classmethod
    def of(cls, fusion, plan):
        graph = fusion.graph
        return cls([(v.shape, v.dtype) for v in graph.inputs],
                   [(plan.offsets.get(v.id) if v.id not in plan.aliases else None, v.shape,
                     v.dtype) for v in graph.outputs],
                   plan.arena_bytes, plan.output_bytes,
                   [(plan.offsets[vid], array) for vid, array in plan.constants.items()],
                   index_gathers(graph), bool(plan.aliases), len(fusion.kernels),
                   [plan.fresh.get(v.id) for v in graph.outputs])


def unwritable(x, dtype):
    """Why a compiled call cannot write `x` in place as an input of np.dtype `dtype` (a
    Generator's state, a train step's parameter), or None: a converted copy would take the
    writes, the caller's array never changing, and read-only memory must not be written (a
    read-only np.memmap: a crash)."""
    if not isinstance(x, np.ndarray):
        return f"a {type(x).__name__}, not a NumPy array"
    if x.dtype != dtype:
        order = "" if x.dtype.isnative else " in non-native byte order"
        return f"an array of dtype {x.dtype.name}{order}, not {dtype.name}"
    if not x.flags.writeable:
        return "a read-only array"
    return None


def _arena_too_big(lowered):
    """The MemoryError of an arena this machine cannot give, naming the largest buffer."""
    from .errors import ShapeError
    from .trace import user_source
    plan, graph = lowered.plan, lowered.fusion.graph
    big = max((n for n in graph.nodes if n.output.id in plan.offsets),
              key=lambda n: n.output.size * n.output.dtype.itemsize, default=None)
    what = (f"; the largest buffer is {big.output.dtype.name}{list(big.output.shape)} "
            f"({big.output.size * big.output.dtype.itemsize / 2 ** 30:.1f} GiB), from "
            f"{big.op} at {big.source}" if big is not None else "")
    return ShapeError(f"the compiled program needs {plan.arena_bytes / 2 ** 30:.1f} GiB of buffers, "
                      f"more than this machine can allocate{what}: make that value smaller (a "
                      "smaller batch, or chunks), or see gradc.explain's memory plan",
                      source=user_source())


class Compiled:
    """One compiled signature: the lowered program (its stages, kernels and plan: `lowered`,
    which may make them only when asked for), the arena and the driver. A train step's
    signature also knows where its parameters sit among the leaves (`param_leaves`) and which
    inputs are gradc's own (`first_owned`: the optimizer state, then `runtime_scalars` scalars
    that change every step)."""

    thread = None  # a token of the thread that compiled it (gradc/function.py this_thread)

    def __init__(self, lowered, driver, out_kind, driver_module=None, param_leaves=None,
                 first_owned=None, runtime_scalars=0):
        self.lowered = lowered
        self.layout = layout = lowered.layout
        self.driver = driver
        self.param_leaves, self.first_owned, self.runtime_scalars = param_leaves, first_owned, runtime_scalars
        self.fast = None  # the LastCall that recognizes this signature (see last_call)
        # arrays read from outside the arguments, inputs after the leaves (gradc/capture.py)
        self.captures = NO_CAPTURES
        # the first run follows the trace in the same call: what the trace itself changed (a
        # flag it cleared, a table it built) fails the guards, which hold the values it read
        # and are for the calls after (gradc/outside.py's guards)
        self.just_traced = None  # (the thread whose trace made it, until its first run)
        self.traced_run = False  # (whether the last run was that first run)
        # [outside.Stored]: values the function assigned outside its arguments, each with the
        # position of the output that holds it (gradc/function.py writes them after a call)
        self.write_backs = []
        self.out_kind = out_kind
        self.arena_bytes = layout.arena_bytes
        try:
            self._raw = np.zeros(layout.arena_bytes + 64, np.uint8)
        except MemoryError:  # (NumPy's message named the arena's internal uint8 shape)
            raise _arena_too_big(lowered) from None
        start = (-self._raw.ctypes.data) % 64
        self.arena = self._raw[start:start + layout.arena_bytes]
        self.address = self.arena.ctypes.data
        for off, array in layout.constants:
            self.arena[off:off + array.nbytes] = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        # what a CPU driver runs on (codegen/driver_rt.py): `words` (the program's table, the
        # arena, `io`, the inputs' addresses, then what a failed call leaves), passed to the
        # driver as `handle`, their address, a prepared ctypes argument
        # outputs written into new arrays (gradc.jit's): (output index, io slot, shape, dtype)
        # of each array made per call; (output index, the index of the output whose array
        # holds it, shape) of the others
        owners = [i for i, owner in enumerate(layout.fresh) if owner == i]
        self.fresh_made = [(i, len(layout.inputs) + j, *layout.outputs[i][1:])
                           for j, i in enumerate(owners)]
        self.fresh_shared = [(i, owner, layout.outputs[i][1]) for i, owner in
                             enumerate(layout.fresh) if owner is not None and owner != i]
        self.fresh_positions = frozenset(owners)
        self.io = np.zeros(max(1, len(layout.inputs) + len(owners)), np.int64)
        self.io_address = self.words = self.handle = None
        if driver_module is not None:
            self.io_address = self.io.ctypes.data
            self.words = np.zeros(driver_rt.WORDS, np.int64)
            self.words[:driver_rt.STATUS] = (driver_module.PROGRAM, self.address, self.io_address)
            self.handle = ctypes.c_int64(self.words.ctypes.data)
        self.input_types = layout.inputs
        self.outputs = [None if off is None else self.view(off, shape, dtype)
                        for off, shape, dtype in layout.outputs]  # (None: in place, or fresh)
        self.lock = threading.Lock()
        forks.track(self, "lock")
        if driver is not None and layout.gathers:
            self._report_index_errors(index_error_reporter(layout.gathers, layout.in_place),
                                      driver_module)

    # the stages, kernels, plan and program, for explain, `gradc compile` and the CUDA runtime
    stages = property(lambda self: self.lowered.stages)
    fusion = property(lambda self: self.lowered.fusion)
    plan = property(lambda self: self.lowered.plan)
    program = property(lambda self: self.lowered.program)

    def _report_index_errors(self, report, driver_module):
        """A kernel's IndexError (an index out of range) is raised as `report(error)`, a
        GradcError that names the caller's line and the input holding the indices: by the
        generated driver (a try costs nothing until it catches), which the first signature
        with that driver tells how (the same driver is the same graph)."""
        if driver_module is not None and driver_module.ON_INDEX_ERROR is None:
            driver_module.ON_INDEX_ERROR = report

    def with_captures(self, leaves):
        """The leaves, then the arrays read from outside the arguments as they are now (raises
        capture.CaptureChanged where one is no longer of its traced shape and dtype, or a
        guarded value changed, but on the run that follows the trace)."""
        guards = self.just_traced != threading.get_ident()  # (the tracing thread's run)
        if not guards:
            self.just_traced = None
        return list(leaves) + self.captures.read(guards) if self.captures else leaves

    def last_call(self, treedef, leaves, writeable=()):
        """This signature's LastCall (made once, on a call whose leaves the driver could take as
        they are), or None: not a CPU program, a tree it does not handle, or not made yet."""
        if self.fast is None and self.io_address:
            if not self.captures.hold():  # (the trace changed what it read: not yet)
                return None
            try:
                leaves = self.with_captures(leaves)
            except CaptureChanged:  # (another thread changed it since: not yet)
                return None
        if self.fast is None and self.io_address and all(
                type(x) is np.ndarray and x.flags.c_contiguous and x.dtype == dtype
                for x, (_, dtype) in zip(leaves, self.input_types)):
            self.fast = LastCall.make(treedef, leaves, self, writeable) or False
        return self.fast or None

    def check_writable(self, leaves, written):
        """SignatureError unless each leaf of `written` can take the compiled program's writes."""
        for i in written:
            dtype = np.dtype(self.input_types[i][1])
            why = unwritable(leaves[i], dtype)
            if why is not None:
                raise SignatureError(
                    f"{self._input_name(i)} is {why}, and the compiled program writes it in "
                    "place (a gradc.random.Generator's state, advanced on every call, or a train "
                    f"step's parameter): pass a writeable {dtype.name} array instead, a copy "
                    f"(a.astype(np.{dtype.name}))", source=user_source())

    def _input_name(self, i):
        """Input i's argument path (`rng.state`, `params['W']`), for an error."""
        graph = getattr(self.lowered, "graph", None) or self.lowered.fusion.graph
        return graph.inputs[i].name or f"argument leaf {i}"

    def output_region(self, dtype):
        """The outputs (value and gradients, side by side) as one flat array of `dtype`: what a
        data-parallel step allreduces in place. Alignment padding between them stays zero."""
        return self.arena[:self.layout.output_bytes].view(dtype)

    def call_outputs(self):
        """The outputs the next run writes: the arena's views, and the arrays made now for the
        outputs written into new arrays (their addresses put in io), the second of two over one
        array a view of it (the caller copies it). Called with the lock held."""
        if not self.fresh_made:
            return self.outputs
        outs, io = list(self.outputs), self.io
        for i, slot, shape, dtype in self.fresh_made:
            outs[i] = made = np.empty(shape, dtype)
            io[slot] = data_address(made)
        for i, owner, shape in self.fresh_shared:
            outs[i] = outs[owner].reshape(shape)
        return outs

    def view(self, off, shape, dtype):
        return self.arena[off:off + math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)

    def run(self, leaves, owned=(), written=range(0)):
        """Run on the caller's array `leaves`; `owned` are the addresses of the remaining inputs,
        buffers gradc owns (a train step's optimizer state), which never move. `written` are
        the positions of leaves the driver writes in place (a train step's parameters, checked
        apart by the caller, and Generators' states): every other leaf whose memory overlaps
        them or the arena (an output handed out earlier, or a view of one) is read from a copy,
        so the result is what copies of the inputs would give. A written leaf that cannot take
        the writes is refused (SignatureError)."""
        self.traced_run = self.just_traced == threading.get_ident()  # (its write-backs:
        leaves = self.with_captures(leaves)  # function.py _package)
        keep = []  # contiguous copies that must live until the driver returns
        io = self.io
        # leaves written in place: refused unless the caller's arrays can take the writes; a
        # view (a Generator over a column of a table of states) is written into a contiguous
        # copy, then back into it
        written_back = []
        self.check_writable(leaves, written)
        for i in written:
            x = leaves[i]
            if not x.flags.c_contiguous:
                if not written_back:
                    leaves = list(leaves)  # (not the caller's list)
                leaves[i] = np.ascontiguousarray(x)
                written_back.append((x, leaves[i]))
        spans = [byte_span(leaves[i]) for i in written]
        spans.append((self.address, self.address + self.arena_bytes))
        for i, (x, (shape, dtype)) in enumerate(zip(leaves, self.input_types)):
            if not (isinstance(x, np.ndarray) and x.flags.c_contiguous and x.dtype == dtype):
                x = np.ascontiguousarray(x, dtype=dtype)
                keep.append(x)
            address = data_address(x)  # (x.ctypes leaves GC garbage)
            if i not in written and any(start < address + x.nbytes and address < end
                                        for start, end in spans):
                x = x.copy()  # the driver would overwrite what it still has to read
                keep.append(x)
                address = data_address(x)
            io[i] = address
        for j, address in enumerate(owned, start=len(leaves)):
            io[j] = address
        if self.fast:
            self.fast.forget()  # io no longer holds the addresses it remembers
        outs = self.call_outputs()
        try:
            if self.captures.captures:  # (see capture.OUTSIDE_READS)
                with OUTSIDE_READS:
                    self.driver(self.handle)
            else:
                self.driver(self.handle)
        finally:  # (what the driver wrote, even if it raised: as into the caller's array)
            for x, copy in written_back:
                x[...] = copy
        return outs


def _negatives_refused(v):
    """The indices `x` where `v` is, through casts and views, where(x < 0, out of range, x)
    (gradc.nn.cross_entropy's labels), else None."""
    while v.node is not None and len(v.node.inputs) == 1:
        v = v.node.inputs[0]
    if v.node is None or v.node.op != "where":
        return None
    cond, _, x = v.node.inputs
    less = cond.node is not None and cond.node.op == "less" and cond.node.inputs[0] is x
    return x if less else None


def _input_name(v):
    """The name of the graph input that `v` is computed from through casts and views (the
    indices of a gather: a label array, embedding ids), or "an input"."""
    while v.node is not None and len(v.node.inputs) == 1:
        v = v.node.inputs[0]
    return v.name if v.node is None and v.name else "an input"

