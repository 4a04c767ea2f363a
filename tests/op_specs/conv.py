"""Specs for onnxscope/rewrite/rules/conv.py: Conv and ConvTranspose."""

from __future__ import annotations

import numpy as np

from .refs import frozen_ref, gain_ref, relu_ref
from .spec import S, Spec, i64, weights

w, _ = weights("conv")

# fmt: off
SPECS: list[Spec] = [
    # --- convolutions ---
    S("Conv_pads_bias_relu", ["u = Conv <pads=[1,1,1,1]> (x, W, B)", "y = Relu(u)"],
      {"x": (1, 3, 6, 6)}, {"W": w(4, 3, 3, 3), "B": w(4)}, pwl=True, ref=relu_ref("y", "u")),
    S("Conv_groups_dilations_strides_asym_pads",
      ["t = Tanh(x)",
       "y = Conv <group=2, dilations=[2,1], strides=[2,3], pads=[1,0,2,1]> (t, W, B)"],
      {"x": (1, 4, 11, 10)}, {"W": w(6, 2, 3, 3), "B": w(6)},
      ref=gain_ref("t", "x", np.tanh, 0.0, 1.0)),
    S("Conv_depthwise_same_upper_leakyrelu",
      ["u = Conv <group=3, auto_pad=\"SAME_UPPER\", strides=[2,2]> (x, W)",
       "y = LeakyRelu <alpha=0.2> (u)"],
      {"x": (1, 3, 7, 6)}, {"W": w(3, 1, 3, 3)}, pwl=True, ref=relu_ref("y", "u")),
    S("Conv_1d_batch2", ["y = Conv <strides=[2], pads=[2,1], dilations=[2]> (x, W, B)",
                         "r = Relu(y)"],
      {"x": (2, 2, 10)}, {"W": w(3, 2, 3), "B": w(3)}, pwl=True, ref=relu_ref("r", "y")),
    S("Conv_opset22_relu", ["u = Conv <pads=[1,1,1,1]> (x, W, B)", "y = Relu(u)"],
      {"x": (1, 2, 5, 5)}, {"W": w(3, 2, 3, 3), "B": w(3)}, opset=22, pwl=True,
      ref=relu_ref("y", "u")),
    S("ConvTranspose_strides_output_padding_pads",
      ["t = Relu(x)",
       "y = ConvTranspose <strides=[2,2], output_padding=[1,0], pads=[1,1,0,0]> (t, W, B)"],
      {"x": (1, 3, 4, 5)}, {"W": w(3, 2, 3, 3), "B": w(2)}, pwl=True, ref=relu_ref("t", "x")),
    S("ConvTranspose_groups_dilations",
      ["y = ConvTranspose <group=2, strides=[2,1], dilations=[1,2]> (x, W)", "z = Tanh(y)"],
      {"x": (1, 4, 3, 4)}, {"W": w(4, 3, 2, 2)}, ref=gain_ref("z", "y", np.tanh, 0.0, 1.0)),
    S("ConvTranspose_output_shape",
      ["t = Tanh(x)", "y = ConvTranspose <strides=[2,2], output_shape=[10,9]> (t, W)"],
      {"x": (1, 2, 4, 4)}, {"W": w(2, 3, 3, 3)}),
    # --- weights that depend on the input: a bilinear node, the weights frozen ---
    S("Conv_input_dependent_weights",
      ["g = GlobalAveragePool(x)", "t = Tanh(g)", "W = Reshape(t, s)", "y = Conv(x, W)"],
      {"x": (1, 2, 4, 4)}, {"s": i64([1, 2, 1, 1])}, ref=frozen_ref("y", "W")),
]
# fmt: on
