"""Op types grouped by what onnxscope needs to know of them, in one place (the analysis, the
rules and the clean-ups read these sets; a new op joins a group here)."""

from __future__ import annotations

# ops with subgraphs: they read tensors of the graph around them without listing them as inputs
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})
# ops whose output depends on the *shape* of their input only
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
# ops without inputs that still produce a different value each run
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}
)
# piecewise-constant or integer-valued ops and shape queries: their linear part is zero
VALUE_OPS = frozenset(
    {
        *SHAPE_ONLY_OPS,
        *("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"),
        *("ArgMax", "ArgMin", "Sign", "Floor", "Ceil", "Round", "IsNaN", "IsInf"),
        *("Not", "And", "Or", "Xor", "ConstantOfShape", "EyeLike"),
    }
)
# gates: a product with one of these is frozen on its side (arithmetic.bilinear_plan)
GATE_OPS = frozenset({"Sigmoid", "HardSigmoid", "Softmax", "Tanh", "Erf"})
# ops a gate signal passes through unchanged in nature (elementwise with a constant, reshapes)
GATE_PASS_THROUGH = frozenset(
    {
        *("Add", "Sub", "Mul", "Div", "Neg"),
        *("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Cast"),
        *("Expand", "Tile"),
    }
)
# ops with a spatial window and auto_pad (canonicalize.explicit_pads)
WINDOWED_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})
