"""Convolution adjoints over many geometries: the dot-product test and reconstruction for Conv and
ConvTranspose with strides, dilations, groups, asymmetric pads, auto_pad and 1-D/2-D/3-D kernels.
(Stride-1 convolutions take a Conv with the flipped kernel as adjoint, the others ConvTranspose.)"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import check_model, make_model

RNG = np.random.default_rng(11)


DEPTHWISE = 4  # = the number of channels below


def geometry_cases():
    for dims, stride, dilation, group, pads in itertools.product(
        (1, 2, 3), (1, 2), (1, 2), (1, 2), ("sym", "asym", "SAME_UPPER", "SAME_LOWER", "VALID")
    ):
        if dims == 3 and (stride, dilation) != (1, 1) and pads not in ("asym", "SAME_UPPER"):
            continue  # keep the 3-D cases few
        yield dims, stride, dilation, group, pads
    # depthwise (one group per channel): strided ones have their own adjoint (zero insertion)
    for dims, stride, dilation, pads in itertools.product(
        (1, 2), (1, 2, 3), (1, 2), ("sym", "asym", "SAME_UPPER", "SAME_LOWER", "VALID")
    ):
        yield dims, stride, dilation, DEPTHWISE, pads


def attrs(dims, stride, dilation, group, pads, transposed=False):
    out = [
        f"strides=[{','.join([str(stride)] * dims)}]",
        f"dilations=[{','.join([str(dilation)] * dims)}]",
        f"group={group}",
    ]
    if pads == "sym":
        out.append(f"pads=[{','.join(['1'] * 2 * dims)}]")
    elif pads == "asym":
        out.append(f"pads=[{','.join(['0'] * dims + ['2'] * dims)}]")
    elif not transposed or pads != "VALID":
        out.append(f'auto_pad="{pads}"')
    return ", ".join(out)


@pytest.mark.parametrize("transposed", [False, True], ids=["Conv", "ConvTranspose"])
@pytest.mark.parametrize("dims, stride, dilation, group, pads", list(geometry_cases()))
def test_convolution_adjoint(transposed, dims, stride, dilation, group, pads):
    if pads.startswith("SAME") and dilation == 2:
        pytest.skip("ONNX Runtime does not run dilated convolutions with auto_pad SAME_*")
    size = {1: (11,), 2: (9, 8), 3: (5, 6, 5)}[dims]
    cin, cout = (DEPTHWISE, DEPTHWISE) if group == DEPTHWISE else (4, 6)
    kernel = (3,) * dims
    w_shape = (cin, cout // group, *kernel) if transposed else (cout, cin // group, *kernel)
    op = "ConvTranspose" if transposed else "Conv"
    model = make_model(
        [
            "t = Tanh(x)",
            f"y = {op} <{attrs(dims, stride, dilation, group, pads, transposed)}> (t, W, B)",
        ],
        {"x": (1, cin, *size)},
        inits={
            "W": RNG.standard_normal(w_shape).astype(np.float32) * 0.3,
            "B": RNG.standard_normal(cout).astype(np.float32),
        },
    )
    x = RNG.standard_normal((1, cin, *size)).astype(np.float32)
    check_model(model, {"x": x})  # reconstruction, linearity, adjoint, checker
