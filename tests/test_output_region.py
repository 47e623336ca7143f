"""The flat output region is a contract (gradc.distributed allreduces it in place): the value and
then each gradient, in argument order, each at a 64-byte-aligned offset, with zero padding that
no kernel writes."""
import numpy as np

import gradc
from gradc.passes.memory import ALIGN


def loss(params, x):
    return np.sum(np.tanh(x @ params["W"] + params["b"]) ** 2)


def test_output_region_holds_value_then_gradients_aligned_with_zero_padding():
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 5)).astype(np.float32),
              "b": rng.standard_normal(5).astype(np.float32)}
    x = rng.standard_normal((4, 3)).astype(np.float32)
    vg = gradc.value_and_grad(loss)
    compiled = vg.compiled_for(params, x)
    for _ in range(3):
        value, grads = vg(params, x)
    region = compiled.output_region(np.float32)
    outputs = compiled.fusion.graph.outputs
    offsets = [compiled.plan.offsets[v.id] for v in outputs]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(off % ALIGN == 0 for off in offsets)
    assert region[0] == value
    np.testing.assert_array_equal(region[offsets[1] // 4:][:15], grads["W"].reshape(-1))
    np.testing.assert_array_equal(region[offsets[2] // 4:][:5], grads["b"])
    used = np.zeros(region.size, bool)
    for v, off in zip(outputs, offsets):
        used[off // 4: off // 4 + v.size] = True
    assert np.all(region[~used] == 0)  # padding stays zero
    assert region.size * 4 == compiled.plan.output_bytes
