"""The names gradc.runtime held before it was split (issue 12), for code that still imports them
from here. New code imports from where each lives:

    signature.py    a call's arguments flattened once, the signature key, the argument checks
    compile.py      the compile pipeline: passes -> fuse -> plan -> generate -> load
    executable.py   Compiled: one compiled signature's arena, driver and call
    last_call.py    LastCall: the last call's signature, recognized fast
    function.py     Function: jit / grad / value_and_grad, the per-signature cache
"""
from .compile import check_target, compile_graph, load_driver  # noqa: F401
from .executable import Compiled, index_error_reporter, reporting_index_errors  # noqa: F401
from .function import Function  # noqa: F401
from .last_call import LastCall  # noqa: F401
from .standalone.calls import byte_span, first_overlap  # noqa: F401
from .signature import (check_device_leaves, check_input_dtypes, check_scalar_output,  # noqa: F401
                        differentiable_leaves, normalize_argnums, signature_key, what_changed)
