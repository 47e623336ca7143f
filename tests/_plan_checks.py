"""Checks of a buffer plan shared by the plan tests (tests/passes/test_passes.py) and the
random-program properties (tests/test_properties.py)."""
from gradc.ops.movement import contiguous_strides
from gradc.ops.registry import REDUCE


def assert_overwrites_elementwise(fusion, new, old, life):
    """A value that takes the slot of `old` (plan.shared) is stored by the kernel that reads
    `old` for the last time, a loop kernel whose every read of `old` is at the element it
    computes (so each element is loaded before it is overwritten), with reductions over one
    set of axes at most (CUDA runs other sets as launches that load the inputs again); or an
    addmm (c + a @ b) whose c is `old`, read there for the last time and not as a or b."""
    k = fusion.kernels[life[new][0]]
    if k.kind == "addmm":
        bases = [fusion.layouts[x.id][0].id for x in k.nodes[0].inputs]
        assert bases[0] == old and old not in bases[1:] and life[old][1] == k.index, (new, old)
        return
    assert k.kind == "loop" and life[old][1] == k.index, (new, old, life[new], life[old])
    assert len({n.attr["axes"] for n in k.nodes if n.opdef.kind == REDUCE}) <= 1, k.name
    assert any(v.id == new and v.shape == k.shape for v in k.stores)
    strides = tuple(contiguous_strides(k.shape))
    for node in k.nodes:
        for x in node.inputs:
            layout = fusion.layouts.get(x.id)
            if layout is not None and layout[0].id == old:
                assert (layout[1], tuple(layout[2]), x.shape) == (0, strides, k.shape), (k.name, x)


def assert_member_in_its_block(fusion, plan, member, concat):
    """A value stored in its concatenation's buffer (plan.members) sits at the bytes of its own
    block there, and the concatenation reads it as itself (see memory._concat_members)."""
    (node,) = [k.nodes[0] for k in fusion.kernels
               if k.kind == "concatenate" and k.nodes[0].output.id == concat]
    at = plan.offsets[concat]
    for x in node.inputs:
        if x.id == member:
            assert plan.offsets[member] == at, (member, concat)
            return
        at += x.size * x.dtype.itemsize
    raise AssertionError(f"%{member} is not read by the concatenation %{concat}")
