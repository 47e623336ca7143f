"""passes/repeats.py: a loop kernel that horizontal fusion made of identical independent parts
(same-shaped parameters' SGD updates) is one kernel called for each part, where the joined
kernel ran; the results keep every bit. Kernels whose parts read one buffer, or hold a sum,
stay joined."""
from __future__ import annotations

import numpy as np
import pytest

import gradc
from gradc.passes import AFTER_AUTODIFF, BEFORE_AUTODIFF, repeats, run_passes
from gradc.passes.fuse import fuse
from gradc.trace import trace

SIZES = (5, 8, 8, 8, 3)  # W2 and W3 alike, b1..b3 alike


def _loss(p, x, y):
    h = x
    for i in range(1, len(SIZES) - 1):
        h = gradc.nn.relu(h @ p[f"W{i}"] + p[f"b{i}"])
    n = len(SIZES) - 1
    return gradc.nn.cross_entropy(h @ p[f"W{n}"] + p[f"b{n}"], y)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    p = {}
    for i, (a, b) in enumerate(zip(SIZES, SIZES[1:]), 1):
        p[f"W{i}"] = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        p[f"b{i}"] = rng.standard_normal(b).astype(np.float32) * np.float32(0.1)
    x = rng.standard_normal((6, SIZES[0])).astype(np.float32)
    return p, x, rng.integers(0, SIZES[-1], 6)


@pytest.fixture(scope="module")
def lowered():
    p, x, y = _data()
    return gradc.train_step(_loss, gradc.optim.SGD(lr=0.1)).lower(p, x, y)


def test_identical_updates_are_one_kernel_called_in_a_row(lowered):
    kernels, program = lowered.fusion.kernels, lowered.program
    assert sum("identical parts" in n for n in lowered.fusion.notes) == 2, lowered.fusion.notes
    aliases = lowered.plan.aliases
    updates = {}  # shape -> indices of the kernels updating a parameter of it in place
    for k in kernels:
        if k.kind == "loop" and any(v.id in aliases for v in k.stores):
            updates.setdefault(k.shape, []).append(k.index)
    assert sorted(map(len, updates.values())) == [1, 1, 1, 2, 3], updates
    for shape, indices in updates.items():
        assert indices == list(range(indices[0], indices[0] + len(indices)))  # in a row
        names = {program.kernels[i].name for i in indices}
        assert len(names) == 1, (shape, names)  # one kernel's text
        assert all(len(kernels[i].nodes) == 2 for i in indices)  # lr * g; w - that


def test_split_keeps_every_bit(monkeypatch):
    """The same steps with the parts joined (the fuser's kernel) and split: the same bits."""
    def run():
        p, x, y = _data()
        step = gradc.train_step(_loss, gradc.optim.SGD(lr=0.1))
        losses = [step(p, x, y) for _ in range(2)]
        return np.array(losses), p

    split_losses, split = run()
    monkeypatch.setattr(repeats, "_identical_parts", lambda fuser, k: None)
    joined_losses, joined = run()
    assert split_losses.tobytes() == joined_losses.tobytes()
    for name in split:
        assert split[name].tobytes() == joined[name].tobytes(), name


def _fusion(fn, *shapes):
    rng = np.random.default_rng(0)
    graph, _, _ = trace(fn, [rng.standard_normal(s).astype(np.float32) for s in shapes])
    return fuse(run_passes(run_passes(graph, BEFORE_AUTODIFF), AFTER_AUTODIFF))


def test_independent_alike_maps_are_split():
    fusion = _fusion(lambda a, b, c, d: (a * b + 1.0, c * d + 1.0), *[(4, 5)] * 4)
    assert [len(k.nodes) for k in fusion.kernels] == [2, 2], fusion.notes


@pytest.mark.parametrize("fn", [
    lambda a, b, c, d: (a * b + 1.0, a * d + 1.0),  # one buffer read by both: read once
    lambda a, b, c, d: (np.sum(a * b, axis=0), np.sum(c * d, axis=0)),  # sums
    lambda a, b, c, d: (a * b + 1.0, c * d - 1.0),  # not alike
], ids=["shared-read", "sums", "unlike"])
def test_other_horizontal_kernels_stay_joined(fn):
    fusion = _fusion(fn, *[(4, 5)] * 4)
    assert len(fusion.kernels) == 1, [[n.op for n in k.nodes] for k in fusion.kernels]
    assert not any("identical parts" in n for n in fusion.notes)
