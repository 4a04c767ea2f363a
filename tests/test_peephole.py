"""The twins' probes stay folded into the batch axis between batched ops (rewrite/peephole.py
`sink_folds`, contexts.py `fold`/`unfold`): a Conv -> unit -> Conv chain and a residual Add run on
[K * N, ...] with no Reshape in between, the values unchanged (check_model: every identity, every
graph), and where a frozen operand would broadcast otherwise (a batch of two, whose gains differ
per sample) the fold stays, and the identities still hold.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import check_model, make_model

from onnxscope.rewrite.peephole import _broadcasts_folded

RNG = np.random.default_rng(17)


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def residual_net(batch: int):
    """Conv -> Relu -> Conv -> Add(skip) -> Relu -> Conv -> HardSwish, 3x3 same convolutions."""
    nodes = [
        "c1 = Conv <pads=[1,1,1,1]> (x, W1, B1)",
        "r1 = Relu(c1)",
        "c2 = Conv <pads=[1,1,1,1]> (r1, W2, B2)",
        "s = Add(c2, r1)",
        "r2 = Relu(s)",
        "c3 = Conv <pads=[1,1,1,1]> (r2, W3, B3)",
        "y = HardSwish(c3)",
    ]
    inits = {
        "W1": normal(8, 3, 3, 3),
        "B1": normal(8),
        "W2": normal(8, 8, 3, 3) / 4,
        "B2": normal(8),
        "W3": normal(4, 8, 3, 3) / 4,
        "B3": normal(4),
    }
    return make_model(nodes, {"x": (batch, 3, 8, 8)}, inits=inits)


def reshapes(model) -> int:
    """Reshapes of probe-dependent tensors (the adjoint's weight flips are frozen: not counted)."""
    dependent = {i.name for i in model.graph.input if "probe" in i.name}
    count = 0
    for n in model.graph.node:
        if any(i in dependent for i in n.input):
            dependent.update(n.output)
            count += n.op_type == "Reshape"
    return count


def test_a_batch_of_one_runs_folded_from_the_first_conv_to_the_output():
    checked = check_model(residual_net(1), {"x": normal(1, 3, 8, 8)})
    a = checked.artifacts
    # the probes' fold before the first Conv and the result's unfold after the last unit: the
    # Relu gains, the residual Add and the HardSwish gain all run on [K, C, H, W]
    assert reshapes(a.linear) == 2
    assert reshapes(a.adjoint) == 2
    for graph in (a.linear, a.adjoint):
        muls = [n for n in graph.graph.node if n.op_type == "Mul"]
        assert muls and all(not n.input[0].endswith("unfold") for n in muls)


def test_a_batch_of_two_keeps_the_fold_where_the_gains_differ_per_sample():
    # each sample's Relu gains have shape [2, C, H, W]: against [K * 2, C, H, W] they would pair
    # probe k of sample 1 with sample 0's gains, so the elementwise ops stay unfolded
    checked = check_model(residual_net(2), {"x": normal(2, 3, 8, 8)})
    assert reshapes(checked.artifacts.linear) > 2


@pytest.mark.parametrize(
    ("frozen", "model", "folds"),
    [
        ((1, 8, 4, 4), (1, 8, 4, 4), True),  # a unit's gain, batch of one
        ((8, 1, 1), (1, 8, 4, 4), True),  # a per-channel factor
        ((), (2, 8, 4, 4), True),  # a scalar
        ((1, 8, 1, 1), (2, 8, 4, 4), True),  # a gate shared by the batch
        ((2, 8, 4, 4), (2, 8, 4, 4), False),  # per-sample gains, batch of two
        ((3, 8, 4, 4), (1, 8, 4, 4), False),  # would enlarge the result
        ((1, 1, 8, 4, 4), (1, 8, 4, 4), False),  # a rank above the model's
        (None, (1, 8, 4, 4), False),  # shape unknown
    ],
)
def test_which_frozen_operands_broadcast_alike_folded(frozen, model, folds):
    assert _broadcasts_folded(frozen, model) is folds
