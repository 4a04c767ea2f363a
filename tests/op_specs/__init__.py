"""The op table of tests/test_ops.py, one list of specs per rule family: the specs for the rules
of onnxscope/rewrite/rules/<family>.py live in tests/op_specs/<family>.py (`spec.py`: what a spec
is; `refs.py`: the numpy references of the masks)."""

from . import arithmetic, conv, normalization, pooling, quantized, shape, units

FAMILIES = {
    "arithmetic": arithmetic.SPECS,
    "conv": conv.SPECS,
    "normalization": normalization.SPECS,
    "pooling": pooling.SPECS,
    "quantized": quantized.SPECS,
    "shape": shape.SPECS,
    "units": units.SPECS,
}
