"""Dead-code elimination: keep only the nodes the outputs need.

The graph is rebuilt (values belong to the graph that made them, so a later autodiff can extend
the result); `replay` already skips every node the outputs do not reach.
"""
from ..ir import replay


def dce(graph):
    return replay(graph)
