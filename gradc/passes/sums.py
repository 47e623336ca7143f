"""The add trees of a graph, each offered whole to a pass that may replace the sum by something
cheaper (slices.py: one accumulation of slice gradients; products.py reads the trees too). A
tree is an `add` and the `add`s below it that nothing else reads."""
from collections import Counter

from ..ir import replay


def add_trees(graph):
    """(uses, trees): `uses` counts each value's readers (outputs included); `trees` maps the id
    of each maximal add tree's root to the tree's terms (values, left to right)."""
    uses = Counter(v.id for n in graph.nodes for v in n.inputs)
    uses.update(v.id for v in graph.outputs)
    inner_adds = {v.id for n in graph.nodes if n.op == "add" for v in n.inputs
                  if v.node is not None and v.node.op == "add" and uses[v.id] == 1}

    def terms(root):
        out, stack = [], [root]
        while stack:
            v = stack.pop()
            if v is root or v.id in inner_adds:
                stack += [v.node.inputs[1], v.node.inputs[0]]
            else:
                out.append(v)
        return out

    trees = {n.output.id: terms(n.output) for n in graph.nodes
             if n.op == "add" and n.output.id not in inner_adds}
    return uses, trees


def rewrite_sums(graph, rewrite_sum):
    """Replay `graph`; each maximal add tree's sum is `rewrite_sum(new_graph, summands, uses,
    new)`, or rebuilt as it was where that returns None. `summands` are the tree's terms (old
    values, left to right), `uses` counts each old value's readers (outputs included), and
    `new(v)` is old value v in new_graph."""
    uses, trees = add_trees(graph)
    input_index = {v.id: i for i, v in enumerate(graph.inputs)}
    new_of = {}

    def rewrite(new_graph, node, ins):
        def new(v):
            return new_of[v.id] if v.id in new_of else new_graph.inputs[input_index[v.id]]

        out = None
        if node.output.id in trees:
            out = rewrite_sum(new_graph, trees[node.output.id], uses, new)
        if out is None:
            out = new_graph.apply(node.op, ins, **dict(node.attrs))
        new_of[node.output.id] = out
        return out

    return replay(graph, rewrite)
