"""The NumPy reference interpreter of the IR: the oracle every later stage is tested against."""
import numpy as np


def evaluate(graph, inputs):
    """Run `graph` on NumPy `inputs` (one array per graph input); return the list of outputs."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env = {}
    for v, x in zip(graph.inputs, inputs):
        env[v.id] = np.asarray(x, dtype=v.dtype).reshape(v.shape)
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            args = [env[v.id] for v in node.inputs]
            out = np.asarray(node.opdef.ref(*args, **node.attr))
            out = out.astype(node.output.dtype, copy=False)
            if out.shape != node.output.shape:
                raise AssertionError(f"{node.op}: reference gave {out.shape}, IR says "
                                     f"{node.output.shape}")
            env[node.output.id] = out
    return [env[v.id] for v in graph.outputs]
