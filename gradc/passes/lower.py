"""Lower composite ops (logsumexp, softmax, log_softmax) into primitives, after autodiff has used
their hand-written VJPs, so that fusion only ever sees primitive ops."""
from ..ir import replay
from ..ops.registry import COMPOSITE


def lower_composites(graph):
    def rewrite(new_graph, node, ins):
        if node.opdef.kind == COMPOSITE:
            return node.opdef.lower(*ins, **node.attr)
        return None

    return replay(graph, rewrite)
