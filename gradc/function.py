"""`jit`, `grad` and `value_and_grad`: the per-signature cache and the call path.

A call flattens its arguments, looks up the signature (pytree structure, shapes, dtypes, static
values), and on a hit hands buffer addresses to the driver: no tracing, no compiling, no
allocation; a call with the last call's signature skips even that (gradc/last_call.py). On a
miss it traces, differentiates, compiles (gradc/compile.py) and says why under
GRADC_LOG=compiles.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
import types
from typing import NamedTuple

import numpy as np

from . import autodiff, forks, frozen, pytree, random, transforms
from .capture import (OUTSIDE_READS, CaptureChanged, Captures, changed_contents,
                      numpy_read_before, unchanged_by, unwritten)
from .compile import check_target, compile_graph
from .errors import ArgumentError, GradcError, SignatureError, UnsupportedOpError
from .ir import Value, gc_paused
from .live import asked_types, live_outside
from .log import log_compile
from .ops import fn
from .outside import Given, HeldGiven, Outside, Rebuilt, objects_in, with_objects
from .passes import BEFORE_AUTODIFF, run_passes
from .signature import (Call, RecompileWatch, as_scalar, check_device_leaves, check_input_dtypes,
                        check_loss_output, check_scalar_output, differentiable_leaves, number_loss,
                        keep_recent, normalize_argnums, signature_key, what_changed)
from .trace import (_frame_kind, argument_names, current_graph, leaf_names, trace,
                    user_source)


MAX_VARIANTS = 8  # earlier compiles kept per signature, for outside values that come back


class Function:
    """A compiled function: `jit`, `grad` or `value_and_grad` of `fun`."""

    def __init__(self, fun, mode, argnums=0, copy=False, target="cpu", max_signatures=None,
                 has_aux=False):
        check_target(target)
        if not callable(fun):
            raise ArgumentError(f"gradc.{mode}: {type(fun).__name__} {fun!r} is not a function "
                                f"to compile: give the function (gradc.{mode}(f))",
                                source=user_source())
        self.fun, self.mode, self.argnums, self.copy = fun, mode, argnums, copy
        self.has_aux = has_aux  # fun returns (loss, aux): aux comes back beside the gradients
        self.target = target
        if max_signatures is not None and (not isinstance(max_signatures, int)
                                           or isinstance(max_signatures, bool)
                                           or max_signatures < 1):
            raise ArgumentError(f"max_signatures={max_signatures!r}: give a whole number >= 1 "
                                "(how many signatures may compile), or None", source=user_source())
        self.max_signatures = max_signatures
        self.cache = {}
        # key -> earlier compiles of a signature whose outside values differ (a model's
        # `training` flag switched back and forth: each is compiled once; gradc/capture.py)
        self.variants = {}
        self._compiling = threading.RLock()  # one compile at a time: see compiled_once
        forks.track(self, "_compiling", threading.RLock)
        self._last_key = None
        self._last_call = None  # a LastCall: the last call's signature, recognized fast
        # per thread, key -> the compiled signature a thread other than the one that compiled
        # `cache[key]` runs, with buffers of its own, where gradients come back as views
        # (`_own`): a view is overwritten by its own thread's next call, not by another's.
        # Thread-local, so a thread that ends takes them along (a new one may get its id)
        self._threads = threading.local()
        self._storm = RecompileWatch()
        # what the function assigns outside: written back after each call (True), or, for a
        # pullback whose forward wrote it already, dropped ("discard": transforms.vjp)
        self.stores = True
        self._live = 2  # (arrays read live in the trace after a call, gradc/live.py: 2, those
        # written back and those that changed; 1, those written back; 0, none)
        self.__name__ = getattr(fun, "__name__", "fn")
        self.__doc__ = getattr(fun, "__doc__", None)
        self.__wrapped__ = fun

    def __repr__(self):
        return f"<gradc.{self.mode} of {self.__name__}>"

    def __reduce__(self):
        """A copy (copy.deepcopy of a model holding `self.fwd = gradc.jit(self.forward)`, a
        DQN's target network; pickle) is the same compiled function of the copied `fun`, its
        compiles anew (they hold locks and graphs: deepcopy walked them without end)."""
        return Function, (self.fun, self.mode, self.argnums, self.copy, self.target,
                          self.max_signatures, self.has_aux)

    def __get__(self, obj, objtype=None):
        """As a method (`@gradc.jit` in a class body): `model.forward(x)` calls it with the
        object first, a static argument (each object compiles its own signature)."""
        if obj is None or isinstance(self.fun, staticmethod):  # (@gradc.grad over a
            return self  # @staticmethod takes no object)
        return types.MethodType(self, obj)

    # --- tracing ---------------------------------------------------------------------------
    def trace_joint(self, call, src, capture=False):
        """Trace `call` (a Call) into a new graph; for gradients, append the backward. Returns
        (graph, out_info): the output tree, or for gradients (output tree, gradient trees, whether
        argnums is a tuple, leaves per gradient tree, indices of the outputs that are Python
        floats). With capture=True, arrays read from outside the arguments are inputs after
        theirs (graph.captures: gradc/capture.py); else constants."""
        if self.mode == "jit":
            graph, out_tree, outs = trace(self.fun, call.args, call.kwargs, capture,
                                          write_back=capture)
            results = len(graph.outputs)
            written = _after_the_results(graph, results, returned=True)
            graph = run_passes(graph, BEFORE_AUTODIFF, consume=True)
            graph.write_backs, graph.results = written, results
            _advance_generators(graph, call.treedef)
            return graph, out_tree
        argnums, many = normalize_argnums(self.argnums, len(call.args), src)
        differentiable_leaves(call, argnums, src, argument_names(self.fun))
        graph, out_tree, outs = trace(self.fun, call.args, call.kwargs, capture,
                                      write_back=capture and self.mode != "jacobian"
                                      and self.stores)
        if self.mode == "jacobian":  # (a number returned is a constant: its Jacobian is zeros)
            out_tree, outs, aux_tree, aux = transforms.split_aux(
                out_tree, graph.outputs, self.has_aux, self.fun, src)
            out_tree, outs = pytree.numbers_as_leaves(
                out_tree, outs, lambda x: fn.as_value(np.asarray(x), graph=graph))
            graph.outputs = outs + aux
            graph = run_passes(graph, BEFORE_AUTODIFF, consume=True)
            wrt = [graph.inputs[p] for i in argnums for p in call.ranges[i]]
            outs, aux = graph.outputs[:len(outs)], graph.outputs[len(outs):]
            blocks = transforms.jacobian_values(graph, outs, wrt, src)
            graph.outputs = [v for block in blocks for v in block] + aux
            _advance_generators(graph, call.treedef)
            return graph, (out_tree, [call.arg_trees[i] for i in argnums], many, len(wrt),
                           aux_tree)
        out_tree, graph.outputs = number_loss(out_tree, outs, self.has_aux, graph)
        check_loss_output(out_tree, graph.outputs, self.has_aux, self.fun, src)
        n = len(graph.outputs)
        written = _after_the_results(graph, n)
        graph = run_passes(graph, BEFORE_AUTODIFF, consume=True)
        wrt = [graph.inputs[p] for i in argnums for p in call.ranges[i]]
        loss, aux, kept = graph.outputs[0], graph.outputs[1:n], graph.outputs[n:]
        grads = autodiff.vjp(graph, as_scalar(loss), wrt)
        graph.outputs = [loss] + grads + aux + kept  # (aux after the gradients: see _package)
        graph.write_backs = [_shifted(w, len(grads)) for w in written]
        _advance_generators(graph, call.treedef)
        # the gradients of Python floats are Python floats (of the signature); of NumPy
        # scalars NumPy scalars (of the call: a 0-d array is the same signature), at `where`
        floats = [type(x) is pytree.TracedFloat for i in argnums for x in call.arg_leaves(i)]
        where = tuple(p for i in argnums for p in call.ranges[i])
        return graph, (out_tree, [call.arg_trees[i] for i in argnums], many,
                       [len(call.ranges[i]) for i in argnums],
                       (frozenset(1 + j for j, f in enumerate(floats) if f), where))

    def traced_args(self, args):
        """The arguments with the Python floats of the differentiated ones traced (a gradient's
        contract: pytree.TracedFloat); `args` itself for jit, or when there are none."""
        if self.mode == "jit":
            return args
        nums = self.argnums if isinstance(self.argnums, (tuple, list)) else (self.argnums,)
        nums = {int(a) % len(args) for a in nums if isinstance(a, (int, np.integer))
                and not isinstance(a, (bool, np.bool_)) and -len(args) <= a < len(args)}
        traced = tuple(pytree.trace_floats(a) if i in nums else a for i, a in enumerate(args))
        return args if all(a is b for a, b in zip(traced, args)) else traced

    # --- calling ---------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        last = self._last_call
        # the same signature as the last call: no flatten, key or lookup; but not while another
        # function is traced, where this one is inlined (the program run on the arrays at hand
        # would be a constant in that trace, and what it reads from outside no longer guarded)
        if last is not None and current_graph() is None and (
                not self._views or last.compiled.thread is this_thread()):
            compiled = last.compiled
            with compiled.lock:
                if last.match((args, kwargs)):
                    outs = compiled.call_outputs() if compiled.fresh_made else compiled.outputs
                    if compiled.captures.captures:  # (see capture.OUTSIDE_READS)
                        with OUTSIDE_READS:
                            compiled.driver(compiled.handle)
                    else:
                        compiled.driver(compiled.handle)
                    return self._package(compiled, outs, given=(args, kwargs))
        given, args = (args, kwargs), self.traced_args(args)  # (given: the caller's own)
        try:
            leaves, treedef = pytree.flatten((args, kwargs))
        except SignatureError as e:
            raise SignatureError(str(e), source=user_source()) from None
        if current_graph() is not None or any(isinstance(x, Value) for x in leaves):
            return self._inline(Call(args, kwargs, leaves, treedef))  # while tracing another function
        key = signature_key(leaves, treedef)
        # (Generators' states are written in place: apart from each other and from the other
        # leaves, which are read from a copy where they overlap one, as a train step's parameters)
        advanced = random.generator_leaves(treedef, leaves)
        compiled = self.cache.get(key)
        if compiled is None:
            compiled = self.compiled_once(key, Call(args, kwargs, leaves, treedef))
        if self._views and getattr(compiled, "thread", None) is not this_thread():
            compiled = self._own(key, Call(args, kwargs, leaves, treedef))
        for retry in (True, True, False):  # (another thread may change what a trace read)
            with compiled.lock:
                try:
                    outs = compiled.run(leaves, written=advanced)
                except CaptureChanged as e:
                    if not retry:
                        raise CaptureChanged(f"{e}: changed while it was traced again (by the "
                                             "traced code itself, or by another thread)",
                                             source=user_source()) from None
                    changed = e  # (its message says what changed; its class, how)
                else:
                    if not self._views or getattr(compiled, "thread", None) is this_thread():
                        self._last_call = compiled.last_call(treedef, leaves, advanced)
                    return self._package(compiled, outs, leaves, given=given)
            call = Call(args, kwargs, leaves, treedef)
            compiled = (self._own(key, call, stale=compiled, why=changed)
                        if self._owned().get(key) is compiled
                        else self.compiled_once(key, call, stale=compiled, why=changed))

    @property
    def _views(self):
        """Whether the results hold views of the compiled signature's buffers (gradients,
        without copy=True)."""
        return self.mode in ("grad", "value_and_grad") and not self.copy

    def _owned(self):
        """This thread's own compiled signatures (key -> Compiled)."""
        owned = getattr(self._threads, "owned", None)
        if owned is None:
            owned = self._threads.owned = {}
            self._threads.variants = {}
        return owned

    def _own(self, key, call, stale=None, why=None):
        """This thread's compiled signature `key`, compiled now (from the program cache: a
        trace, no code generation) where it has none: its gradients are views of its own
        buffers, so another thread's call does not overwrite what this one returned (nor this
        one the other's). Its earlier compiles of `key` whose outside values differ are kept
        (MAX_VARIANTS), as `_variant` keeps the compiling thread's."""
        owned = self._owned()
        own = owned.get(key)
        if own is None or own is stale:
            variants = self._threads.variants.setdefault(key, [])
            match = stale is not None and _take_variant(variants, stale)
            if match:
                owned[key] = match
                return match
            src = user_source()
            with self._compiling:
                t0 = time.perf_counter()
                own = self._compile(key, call, src, cache=False, why=why, stale=stale)
            log_compile(f"{self.mode}({self.__name__})", src,
                        f"{why or 'a call'} in another thread than the one that compiled it "
                        "(buffers of its own: its gradients are views)", own.layout.kernels,
                        {"trace and load": time.perf_counter() - t0})
            if why is not None:
                self._storm.note_outside(why, self.__name__, src)
            if stale is not None:  # (kept: its values may come back)
                variants.append(stale)
                del variants[:-MAX_VARIANTS]
            owned[key] = own
        return own

    def lower(self, *args, load=False, source=None, capture=True, fresh_outputs=True,
              **kwargs):
        """Trace and compile for these arguments without caching the result; with load=False
        nothing is Numba-compiled and the Compiled has no driver (what `gradc compile` writes
        out, with capture=False: arrays read from outside the arguments compiled in, and
        fresh_outputs=False: jit's results in the arena). `source` names the caller in the
        generated code (default: the calling line)."""
        call = Call(self.traced_args(args), kwargs)
        return self._compile(call.key(), call, source or user_source(), load=load, cache=False,
                             capture=capture, fresh_outputs=fresh_outputs)

    def compiled_for(self, *args, **kwargs):
        """The compiled signature for these arguments (compiling it if needed)."""
        call = Call(self.traced_args(args), kwargs)
        key = call.key()
        compiled = self.cache.get(key)
        return compiled if compiled is not None else self.compiled_once(key, call)

    def last_compiled(self):
        """The signature compiled last (None before the first call)."""
        return self.cache.get(self._last_key)

    def compiled_once(self, key, call, stale=None, why=None):
        """The compiled signature `key`, compiled now unless it is cached (or the cached one is
        `stale`: an array it reads from outside the arguments changed, says `why`): threads
        whose first calls come at once compile it once, the others waiting for it."""
        with self._compiling:
            compiled = self.cache.get(key)
            if compiled is None or compiled is stale:
                compiled = (stale is not None and self._variant(key, stale)) or self._compile(
                    key, call, user_source(), why=why, stale=stale)
            return compiled

    def _variant(self, key, stale):
        """An earlier compile of signature `key` whose outside values are those of now (it
        replaces `stale` in the cache), or None."""
        match = _take_variant(self.variants.get(key, []), stale)
        if match is not None:
            self.cache[key] = match
        return match

    def _compile(self, key, call, src, load=True, cache=True, capture=True, why=None,
                 stale=None, fresh_outputs=True):
        """Trace, differentiate and compile the signature `key` of `call` (a Call); cache it
        unless cache=False. `src`: the calling line; `why`: what changed, if not the key, in
        what `stale` (the Compiled before) read. jit's results are written into new arrays
        on each call, not copied out of the arena (unless fresh_outputs=False)."""
        check_input_dtypes(key, lambda: leaf_names((call.args, call.kwargs),
                                                   argument_names(self.fun)), src)
        if (cache and self.max_signatures is not None and key not in self.cache
                and len(self.cache) >= self.max_signatures):
            raise SignatureError(
                f"{self.__name__} would compile signature number {len(self.cache) + 1}, over "
                f"max_signatures={self.max_signatures}: " + what_changed(
                    self._last_key, key, leaf_names((call.args, call.kwargs),
                                                    argument_names(self.fun)),
                    argument_names(self.fun)),
                source=src)
        check_device_leaves(call.leaves, self.target, src)
        t0 = time.perf_counter()
        changed = changed_contents(stale)
        graph, out_info = self._trace_joint_live(call, src, capture, stale, changed)
        captures, guards = graph.captures, graph.guards
        t_trace = time.perf_counter() - t0
        title = f"{self.mode} of {self.__name__} from {src}"
        compiled = compile_graph(graph, title, out_info, load, self.target,
                                 fresh_outputs=fresh_outputs and not self._views)
        if random.draws_from_generators(call):
            compiled.lock = random.DRAWS
        compiled.captures = Captures(captures, guards, compiled.input_types,
                                     graph.numpy_read, graph.updated)
        compiled.just_traced = threading.get_ident()
        compiled.thread = this_thread()
        compiled.write_backs = graph.write_backs  # (each with its output's position)
        compiled.results = getattr(graph, "results", 0)  # (jit's: those before write-backs)
        compiled.live_paths = graph.live_paths  # (read live again by the next trace)
        compiled.read_live = graph.read_live  # (capture.unchanged_by)
        unchanged_by(compiled.captures, stale, compiled, graph.names_run)
        unwritten(compiled.captures, stale, compiled)
        if not cache:
            return compiled
        if why is not None and key in self.cache:  # (kept: its values may come back)
            variants = self.variants.setdefault(key, [])
            variants.append(self.cache[key])
            del variants[:-MAX_VARIANTS]
        names = leaf_names((call.args, call.kwargs), argument_names(self.fun))
        log_compile(f"{self.mode}({self.__name__})", src,
                    why or what_changed(self._last_key, key, names, argument_names(self.fun)),
                    compiled.layout.kernels, {"trace": t_trace, **compiled.lowered.timings})
        if why is not None:
            self._storm.note_outside(why, self.__name__, src)
        elif self.max_signatures is None:  # (a cap set on purpose: no warning)
            self._storm.note(self._last_key, key, self.__name__, argument_names(self.fun), src,
                             "pass max_signatures=N (the hard cap; it silences this warning)")
        if self.max_signatures is None:
            keep_recent(self.cache, key, compiled, self.variants)
        else:
            self.cache[key] = compiled
        self._last_key = key
        return compiled

    def _trace_joint_live(self, call, src, capture, stale, changed):
        """trace_joint after a call of `stale` (the Compiled traced before, or None) changed
        arrays read from outside (`changed`), with the arrays stale writes back and those that
        changed read live (gradc/live.py); where that trace is refused (the code's Python
        decided on their values: `if (self.rv < 0).any()`), or its code asks types
        (live.asked_types), traced again with fewer (those written back alone, then none),
        from then on."""
        while True:
            live, made_live = (stale if self._live else None), None
            try:
                with gc_paused(), frozen.recording_lines(bool(changed)), \
                        numpy_read_before(stale, changed), \
                        live_outside(live, changed, self._live > 1) as made_live:
                    graph, out_info = self.trace_joint(call, src, capture)
                    if made_live.swapped and self._live > 1 and asked_types():
                        raise _AskedTypes  # (those written back alone: README's caveat)
                    graph.live_paths = made_live.live_paths()
                    graph.read_live = made_live.read_by_functions_alone()
                    return graph, out_info
            except (GradcError, _AskedTypes):
                if live is None or made_live is None or not made_live.swapped:
                    raise
                self._live -= 1  # (a threshold changed once, `if self.clip.max() > 2`, keeps
                # the arrays written back read live: a running mean beside it)

    def _package(self, compiled, outs, leaves=None, given=None):
        """The call's result from the compiled program's outputs; `leaves`: the call's (the
        fast path's calls have no NumPy scalar among them). Values the function assigned
        outside its arguments (`self.cache = x`) are written there first, as new arrays (or
        NumPy scalars), as NumPy's code makes them on every call; what it was given
        (`net.params = params`), as the call's own objects (`given`: its (args, kwargs))."""
        # outputs the program wrote into new arrays, made for this call: returned (and written
        # back) as they are
        new_arrays = getattr(compiled, "fresh_positions", ())
        written = getattr(compiled, "write_backs", ())  # (an interpreted one has none)
        if written:
            at = set()  # made: position -> the array written, one per value
            made = {i: outs[i] for i in new_arrays}  # (never 0-d: memory._fresh_outputs)
            traced, compiled.traced_run = getattr(compiled, "traced_run", False), False
            found = {id(o): o.found(traced) for o in _outsides(written)}  # (as the call
            # found them: before a write-back rebinds one; the traced call's, as its trace
            # stored them). So are the caller's own containers and values, each named by
            # where the call found it: `p["b"], p["rm"] = p["rm"], p["b"]` made both entries
            # the old rm, the second write-back following p["b"] after the first rebound it
            written = [stored._replace(container=Given(stored.given).follow(given), holder=None)
                       if getattr(stored, "given", None) is not None else stored
                       for stored in written]
            _refuse_shared_containers(self.__name__, written, given, compiled)
            own = [stored.value.follow(given) if isinstance(stored.value, Given) else None
                   for stored in written]
            for stored, value in zip(written, own):
                if isinstance(stored.value, Given):  # (the caller's own: `net.params = p`)
                    stored.write(value)
                elif isinstance(stored.value, Outside):  # (`self.prev = self.rm`)
                    stored.write(stored.value.follow(found))
                elif isinstance(stored.value, Rebuilt):  # (`self.used = Record(w=self.W)`)
                    stored.write(stored.value.build(found))
                elif isinstance(stored.value, Made):
                    stored.write(stored.value.build(outs, given, made, found))
                    at.update(stored.value.positions())
                else:
                    stored.write(made.setdefault(stored.value, _written(outs[stored.value])))
                    at.add(stored.value)
            results = getattr(compiled, "results", 0)  # (a result written back too: the
            outs = [made[i] if i < results and i in made else o  # array written, itself)
                    for i, o in enumerate(outs) if i not in at or i < results]
            stored = {id(x) for x in made.values()}  # (arrays returned as they are)
        else:
            stored = {id(outs[i]) for i in new_arrays} if new_arrays else ()
        if self.mode == "jit":  # (None: a generator's counter, advanced in place)
            return pytree.unflatten(compiled.out_kind, [
                o if id(o) in stored and isinstance(o, np.ndarray) else _result(o, fresh=True)
                for o in outs if o is not None])
        if self.mode == "jacobian":  # per output, a block per differentiated leaf; then aux
            out_tree, arg_trees, many, n, aux_tree = compiled.out_kind
            count = n * pytree.leaf_count(out_tree)
            blocks = [o if i in new_arrays else o.copy()  # (arrays, 0-d too: JAX's jacrev)
                      for i, o in enumerate(outs[:count])]
            per_output = ([blocks[i:i + n] for i in range(0, len(blocks), n)] if n else
                          [[] for _ in range(pytree.leaf_count(out_tree))])  # (argnums=())
            jac = transforms.jacobian_tree(out_tree, arg_trees, many, per_output)
            if aux_tree is None:
                return jac
            return jac, pytree.unflatten(aux_tree, [o if i in new_arrays else _result(o, fresh=True)
                                                    for i, o in enumerate(outs[count:], count)])
        out_tree, grad_trees, many, counts, (floats, where) = compiled.out_kind
        value = outs[0] if 0 in new_arrays else _result(outs[0], fresh=True)
        scalars = () if leaves is None else {1 + j for j, p in enumerate(where)
                                             if isinstance(leaves[p], np.generic)}
        if floats or scalars:  # the gradient of a Python float is a Python float; of a NumPy
            # scalar a NumPy scalar (immutable, as the point was: not a view of a buffer the
            # next call overwrites, `list(map(gradc.grad(f), x))` over an array's elements)
            outs = [float(o) if i in floats else o[()] if i in scalars else o
                    for i, o in enumerate(outs)]
        fresh = self.copy or _from_a_library(sys._getframe(2))
        grads, cursor = [], 1
        for tree, n in zip(grad_trees, counts):  # (0-d gradients too are arrays, like params)
            # (a new view of the buffer each call: what the caller does to the array object,
            # `g.shape = (-1,)` or its flags, does not reach the next call's)
            grads.append(pytree.unflatten(tree, [
                o if isinstance(o, (float, np.generic)) or i in new_arrays else
                o.copy() if fresh else o.view() for i, o in enumerate(outs[cursor:cursor + n], cursor)]))
            cursor += n
        grads = tuple(grads) if many else grads[0]
        if self.has_aux:  # out_tree is that of (loss, aux); aux follows the gradients
            aux_tree = out_tree[1][1]
            end = cursor + pytree.leaf_count(aux_tree)
            aux = pytree.unflatten(aux_tree, [o if i in new_arrays else _result(o, fresh=fresh)
                                              for i, o in enumerate(outs[cursor:end], cursor)])
            return (grads, aux) if self.mode == "grad" else ((value, aux), grads)
        return grads if self.mode == "grad" else (value, grads)

    # --- inside another trace: grad of grad ------------------------------------------------
    def _inline(self, call):
        """Called while another function is traced (grad of grad, or a gradient taken at a
        constant point of a function that closes over traced values): build this function,
        and its gradient, into that function's graph."""
        args, kwargs = call.args, call.kwargs
        watch = frozen.active()
        if watch is not None:  # (what this function reads from outside: outside the trace too)
            watch.scan_callable(self.fun)
        if self.mode == "jit":
            return self.fun(*args, **kwargs)
        graph = current_graph() or next(x.graph for x in call.leaves if isinstance(x, Value))
        src = user_source()
        argnums, many = normalize_argnums(self.argnums, len(args), src)
        differentiable_leaves(call, argnums, src, argument_names(self.fun))
        args = list(args)
        wrt, trees = [], []
        for i in argnums:  # fresh variables, so only this function's uses are differentiated
            marked = [_fresh_variable(graph, x) for x in call.arg_leaves(i)]
            wrt.append(marked)
            trees.append(call.arg_trees[i])
            args[i] = pytree.unflatten(call.arg_trees[i], marked)
        out = self.fun(*args, **kwargs)
        flat = [w for ws in wrt for w in ws]
        if self.mode == "jacobian":
            outs, out_tree = pytree.flatten(out)
            out_tree, outs, aux_tree, _ = transforms.split_aux(out_tree, outs, self.has_aux,
                                                              self.fun, src)
            out_tree, outs = pytree.numbers_as_leaves(out_tree, outs, np.asarray)
            outs = [fn.as_value(o, graph=graph) for o in outs]
            with _derivatives_read_freely(graph):
                blocks = transforms.jacobian_values(graph, outs, flat, src)
            jac = transforms.jacobian_tree(out_tree, trees, many, blocks)
            return jac if aux_tree is None else (jac, out[1])
        aux = None
        if self.has_aux:
            leaves, tree = pytree.flatten(out)
            check_loss_output(tree, leaves, True, self.fun, src)
            out, aux = out
        if type(out) is float:  # (a constant loss: its gradient is zeros)
            out = fn.as_value(np.asarray(out), graph=graph)
        check_scalar_output(out, src)
        with _derivatives_read_freely(graph):
            grads_flat = autodiff.vjp(graph, as_scalar(out), flat)
        grads, cursor = [], 0
        for tree, ws in zip(trees, wrt):
            grads.append(pytree.unflatten(tree, grads_flat[cursor:cursor + len(ws)]))
            cursor += len(ws)
        grads = tuple(grads) if many else grads[0]
        if self.has_aux:
            return (grads, aux) if self.mode == "grad" else ((out, aux), grads)
        return grads if self.mode == "grad" else (out, grads)


@contextlib.contextmanager
def _derivatives_read_freely(graph):
    """The derivatives of a gradient taken inside traced code (gradc.hessian, hvp, a jacobian
    of a grad) read the forward's values, those an in-place operator has since replaced
    (`z -= z.max()`: max's VJP reads the old z) too, as the outermost function's backward
    does: the stale-read check is for the user's lines, not gradc's."""
    stale, graph.stale = graph.stale, {}
    try:
        yield
    finally:
        graph.stale = stale


def _fresh_variable(graph, x):
    """A new value of `graph` equal to `x` (a traced value, an array, or a TracedFloat: weak,
    float64), to differentiate with respect to."""
    value = fn.const(graph, x, np.float64) if type(x) is pytree.TracedFloat else fn.as_value(
        x, graph=graph)
    fresh = graph.apply("alias", (value,), tag=f"grad{graph._next_id}")
    if type(x) is pytree.TracedFloat or fn.is_weak(x):
        graph.weak.add(fresh.id)
    return fresh


def _written(value):
    """A value written back: a new array, or a NumPy scalar for a 0-d one."""
    return value.copy() if value.ndim else value[()]


class _AskedTypes(Exception):
    """A trace with Live views in place ran code that asks types (gradc/live.py)."""


def _refuse_shared_containers(name, written, given, compiled):
    """Refuse a call where a dict or list the function stores into is one the call's arguments
    reach another way too (`f(d, d, x)`, an outside dict also passed: cs231n's bn_param read
    as a global). The trace ran on a copy of each argument's containers, so a store through
    one name was not seen through the other, as NumPy's code sees it: wrong results, and a
    wrong dict after the call, silently. Checked after the run, before anything is written
    back (nothing is); once for the same top-level arguments as the call before (a walk of a
    dict of parameters on every call would cost microseconds)."""
    stores = [s for s in written if isinstance(s.container, (dict, list))]
    if not stores or given is None:
        return
    key = tuple(map(id, given[0])) + tuple(map(id, given[1].values()))
    if getattr(compiled, "shared_checked", None) == key:
        return
    places, stack = {}, [(given, ())]  # (container id -> where the arguments hold it)
    while stack:
        x, steps = stack.pop()
        if isinstance(x, (dict, list)):
            seen = id(x) in places
            places.setdefault(id(x), []).append(steps)
            if seen:
                continue
        if isinstance(x, (dict, list, tuple)):
            stack.extend((v, steps + (k,)) for k, v in (
                x.items() if isinstance(x, dict) else enumerate(x)))
    for s in stores:
        ways = places.get(id(s.container), [])
        if len(ways) > 1 or ways and s.given is None:
            shown = " and ".join(_argument_name(w) for w in sorted(ways, key=repr)[:2])
            raise UnsupportedOpError(
                f"{name} stores into {s.where}, a {type(s.container).__name__} that the call "
                f"passes as {shown}" + ("" if s.given is not None else ", and the function "
                                        "reaches from outside too") + ": the compiled function "
                "traced them as separate containers, so a store through one name is not seen "
                "through the other, as NumPy's code sees it. Pass it once (or pass a copy, "
                "dict(d)); nothing was written back")
    compiled.shared_checked = key


def _argument_name(steps):
    """`argument 1['bn']` or `cfg=['lr']` for steps (0 or 1: args or kwargs, then keys)."""
    if len(steps) < 2:
        return "the arguments"
    head = f"argument {steps[1]}" if steps[0] == 0 else f"{steps[1]}="
    return head + "".join(f"[{k!r}]" for k in steps[2:])


class Made(NamedTuple):
    """A dict, list or tuple of values the trace assigned outside (`self.cache = (x, self.W,
    h)`): its tree and leaves, each an output's position (a traced value; one value twice is
    one array twice), what the function was given (Given: the call's own), or an object from
    outside as it is (self.W itself, as NumPy's tuple holds it)."""
    treedef: tuple
    leaves: tuple
    objects: tuple = ()  # (Rebuilt: the objects the trace made in it holding outside arrays,
    # `self.log = [Record(w=self.W)]`, made again with each call's)

    def positions(self):
        return [x for x in self.leaves if type(x) is int]

    def build(self, outs, given, made, found):
        if self.objects:
            return with_objects(self._build(outs, given, made, found), {
                id(o.template): o.build_given(given) if isinstance(o, HeldGiven) else
                o.build(found) for o in self.objects})
        return self._build(outs, given, made, found)

    def _build(self, outs, given, made, found):
        return pytree.unflatten(self.treedef, [
            made.setdefault(x, _written(outs[x])) if type(x) is int
            else x.follow(given) if isinstance(x, Given)
            else x.follow(found) if isinstance(x, Outside)
            else x.build(found) if isinstance(x, Rebuilt) else x for x in self.leaves])


def _outsides(written):
    """The Outside values among write-backs (assigned, or leaves of what was)."""
    for stored in written:
        if isinstance(stored.value, Outside):
            yield stored.value
        elif isinstance(stored.value, Rebuilt):
            yield from stored.value.outsides()
        elif isinstance(stored.value, Made):
            yield from (x for x in stored.value.leaves if isinstance(x, Outside))
            yield from (outside for x in stored.value.leaves + stored.value.objects
                        if isinstance(x, Rebuilt) for outside in x.outsides())


def _after_the_results(graph, first, returned=False):
    """The values the trace assigned outside its arguments (graph.write_backs) appended to the
    outputs, from position `first` on (before the generators' counters, _advance_generators):
    the Stored list, each with its output's position for its value, or Made, for a dict or
    list holding values (the passes remake the values, not the positions); what the function
    was given (outside.Given) is the call's own object, no output. `returned`: a value it also
    returns is that result's position (`self.h = h; return h`: one array, as NumPy's)."""
    assert len(graph.outputs) == first
    outputs, written = list(graph.outputs), []
    position = {id(v): i for i, v in enumerate(outputs)} if returned else {}
    updated = {id(v): array for array, v in graph.in_place.values()}
    for w in graph.write_backs:
        if (isinstance(w.value, Value) and id(w.value) in updated
                and not getattr(w, "into", True)
                and id(w.value) in graph.outside_leaves):  # (`self.W -= g; self.tW = self.W`:
            written.append(w._replace(value=graph.outside_leaves[id(w.value)]))  # W itself)
        elif isinstance(w.value, Value):  # (one value assigned twice, `self.cache = self.out =
            if id(w.value) not in position:  # h`: one output, one array in both)
                position[id(w.value)] = len(outputs)
                outputs.append(w.value)
            written.append(w._replace(value=position[id(w.value)]))
        elif isinstance(w.value, (Given, Outside, Rebuilt)):
            written.append(w)
        else:
            leaves, treedef = pytree.flatten(w.value)
            at = []
            for x in leaves:
                if isinstance(x, Value) and id(x) in updated:  # (self.W after `self.W -= g`:
                    at.append(graph.outside_leaves.get(id(x), updated[id(x)]))  # the array
                    # itself, written into after the call)
                elif isinstance(x, Value) and id(x) in graph.given_paths:
                    at.append(Given(graph.given_paths[id(x)]))
                elif isinstance(x, Value):
                    if id(x) not in position:
                        position[id(x)] = len(outputs)
                        outputs.append(x)
                    at.append(position[id(x)])
                else:  # (self.W itself: the array at its path each call; anything else as
                    at.append(graph.outside_leaves.get(id(x), x))  # it is)
            objects = tuple(graph.outside_leaves[id(o)] for o in objects_in(w.value)
                            if isinstance(graph.outside_leaves.get(id(o)), Rebuilt))
            written.append(w._replace(value=Made(treedef, tuple(at), objects)))
    graph.outputs = outputs
    return written


def _shifted(stored, by):
    """A write-back whose values' outputs moved `by` places (the gradients came before them)."""
    value = stored.value
    if type(value) is int:
        return stored._replace(value=value + by)
    if isinstance(value, Made):
        return stored._replace(value=value._replace(leaves=tuple(
            x + by if type(x) is int else x for x in value.leaves)))
    return stored


def _advance_generators(graph, treedef):
    """Outputs that advance the gradc.random Generators among the arguments (whose tree is
    `treedef`) on every call."""
    for value, i in random.counter_updates(graph, treedef):
        graph.aliases[len(graph.outputs)] = i
        graph.outputs.append(value)




def _result(view, fresh):
    """A result: a copy (fresh), or a new view of gradc's buffer, so that what the caller does
    to the array object (`g.shape = (-1,)`, its flags) does not reach the next call's."""
    if view.shape == ():
        return view.dtype.type(view[()])
    return view.copy() if fresh else view.view()


_LIBRARY_CALLER = {}  # code object -> whether it is another library's
# libraries known to keep one call's gradient while they make the next: a user's function handed
# to them (up to HOLDER_DEPTH frames below theirs) gets fresh arrays too
HOLDERS, HOLDER_DEPTH = ("scipy.optimize",), 3


def _take_variant(variants, stale):
    """An earlier compile among `variants` whose outside values are those of now, taken out,
    `stale` kept in its place; or None."""
    match = next((v for v in variants if v.captures.hold()), None)
    if match is not None:
        variants.remove(match)
        variants.append(stale)
    return match


_THREAD = threading.local()


def this_thread():
    """A token of the calling thread (its id may be a later thread's once it ends)."""
    token = getattr(_THREAD, "token", None)
    if token is None:
        token = _THREAD.token = object()
    return token


def _from_a_library(frame):
    """Whether a gradient's caller is another library's code: it gets fresh arrays, not views
    of gradc's buffers. scipy.optimize.minimize(gradc.value_and_grad(f), x0, jac=True) keeps
    one call's gradient while it makes the next, and the views changed under it (BFGS and CG
    stopped far from the minimum, silently); the user's own loop keeps the views' speed."""
    code = frame.f_code
    kind = _LIBRARY_CALLER.get(code)
    if kind is None:
        kind = _LIBRARY_CALLER[code] = _frame_kind(code.co_filename) == "library"
    if kind:
        return True
    for _ in range(HOLDER_DEPTH):  # (a function of the user's own that scipy.optimize calls,
        frame = frame.f_back  # `lambda x: vg(x, data)`)
        if frame is None:
            return False
        if frame.f_globals.get("__name__", "").startswith(HOLDERS):
            return True
    return False

