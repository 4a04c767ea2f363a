"""Specs for onnxscope/rewrite/rules/normalization.py: BatchNormalization, and the
Instance, Layer and Group normalizations (units: 1/sigma frozen)."""

from __future__ import annotations

from .refs import inv_sigma_ref, relu_ref
from .spec import F64, S, Spec, d, weights

w, pos = weights("normalization")

# fmt: off
SPECS: list[Spec] = [
    # --- BatchNormalization ---
    S("BatchNormalization_relu",
      ["u = BatchNormalization <epsilon=0.001> (x, sc, bi, mean, var)", "y = Relu(u)"],
      {"x": (1, 3, 4, 4)}, {"sc": w(3), "bi": w(3), "mean": w(3), "var": pos(3)},
      pwl=True, ref=relu_ref("y", "u")),
    S("BatchNormalization_opset11", ["t = Tanh(x)",
                                     "y = BatchNormalization (t, sc, bi, mean, var)"],
      {"x": (2, 2, 3)}, {"sc": w(2), "bi": w(2), "mean": w(2), "var": pos(2)}, opset=11),
    S("BatchNormalization_2d", ["y = BatchNormalization (x, sc, bi, mean, var)", "r = Relu(y)"],
      {"x": (3, 2)}, {"sc": w(2), "bi": w(2), "mean": w(2), "var": pos(2)}, pwl=True,
      ref=relu_ref("r", "y")),
    # --- normalizations ---
    S("InstanceNormalization", ["y = InstanceNormalization <epsilon=0.001> (x, sc, bi)"],
      {"x": (2, 3, 4, 5)}, {"sc": w(3), "bi": w(3)},
      ref=inv_sigma_ref("y", "x", lambda s: s, [2, 3], 1e-3)),
    S("InstanceNormalization_3d_opset22", ["y = InstanceNormalization (x, sc, bi)"],
      {"x": (1, 2, 5)}, {"sc": w(2), "bi": w(2)}, opset=22,
      ref=inv_sigma_ref("y", "x", lambda s: s, [2], 1e-5)),
    S("LayerNormalization_last_axis", ["y = LayerNormalization (x, g, b)"], {"x": (2, 3, 8)},
      {"g": w(8), "b": w(8)}, ref=inv_sigma_ref("y", "x", lambda s: s, [2], 1e-5)),
    S("LayerNormalization_axis1_no_bias", ["y = LayerNormalization <axis=1, epsilon=0.01> (x, g)"],
      {"x": (2, 3, 4)}, {"g": w(3, 4)}, ref=inv_sigma_ref("y", "x", lambda s: s, [1, 2], 1e-2)),
    # onnx 1.23's checker rejects GroupNormalization-18 as deprecated (ORT still runs it)
    S("GroupNormalization_opset18", ["y = GroupNormalization <num_groups=2> (x, sc, bi)"],
      {"x": (1, 4, 3, 3)}, {"sc": w(2), "bi": w(2)}, opset=18, valid_onnx=False,
      ref=inv_sigma_ref("y", "x", lambda s: (s[0], 2, -1), [2], 1e-5)),
    S("GroupNormalization_opset21", ["y = GroupNormalization <num_groups=2> (x, sc, bi)"],
      {"x": (1, 4, 3, 3)}, {"sc": w(4), "bi": w(4)}, opset=21,
      ref=inv_sigma_ref("y", "x", lambda s: (s[0], 2, -1), [2], 1e-5)),
    # --- float64 models (ORT has double kernels for these) ---
    # ORT 1.31.1's CUDA kernel for this op reconstructed to 5.1e-8 on an H200
    S("F64_LayerNormalization", ["y = LayerNormalization (x, g, b)"], {"x": ((3, 4), F64)},
      {"g": d(w(4)), "b": d(w(4))}, tol=1e-10, cuda_tol=1e-7,
      ref=inv_sigma_ref("y", "x", lambda s: s, [1], 1e-5)),
]
# fmt: on
