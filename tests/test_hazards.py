"""Issue 12's hazards: onnxscope leaves ONNX Runtime's process-wide logger to its host, and the
checker is shown deprecated ops apart, so that it still checks the rest of the model. The first
two tests failed before their fixes; the third guards the fix (ONNX Runtime runs GroupNorm-18)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from helpers import make_model
from onnx import helper

import onnxscope
from onnxscope.errors import ModelError
from onnxscope.graph.model import load_model


def test_importing_onnxscope_leaves_the_hosts_ort_logger_alone(tmp_path):
    """A host that asks ONNX Runtime for verbose logs still gets them after importing onnxscope
    (the import set the process-wide level to errors only)."""
    model = make_model(["y = Relu(x)"], {"x": (1, 4)})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    script = textwrap.dedent(
        f"""
        import onnxruntime as ort
        ort.set_default_logger_severity(0)
        import onnxscope, onnxscope.runtime.sessions
        ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" in proc.stderr.lower() or "[V:" in proc.stderr, proc.stderr[:500]


def _upsample_then(*nodes) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Upsample", ["x", "s"], ["u"], mode="nearest"), *nodes],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
        [onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])


def test_a_deprecated_op_does_not_hide_the_models_other_errors():
    # the checker stops at its first error: Upsample (deprecated) was accepted by its message,
    # and the Relu with an attribute it does not have behind it was never checked
    bad = _upsample_then(helper.make_node("Relu", ["u"], ["z"], bogus=3))
    with pytest.raises(ModelError, match="bogus"):
        load_model(bad)


def test_a_deprecated_op_that_onnx_runtime_runs_is_interpreted():
    # GroupNormalization-18 is deprecated (its scale became per channel at 21); ORT runs it
    model = make_model(
        ["g = GroupNormalization <num_groups=2> (x, s, b)", "y = Relu(g)"],
        {"x": (1, 4, 3, 3)},
        inits={"s": np.array([1.0, -2.0], np.float32), "b": np.array([0.1, 0.2], np.float32)},
        opset=18,
    )
    assert load_model(model) is not None
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float32)
    v = onnxscope.LinearScope(model).interpret(x).verify()
    assert v.ok, v.as_dict()


@pytest.mark.parametrize("opset", [9, 10, 13])
def test_clip_without_bounds_passes_everything_through(opset):
    # its mask was a float comparison of u with itself (Equal on floats is opset 11+)
    model = make_model(["y = Clip(x)", "z = Relu(y)"], {"x": (2, 3)}, opset=opset)
    x = np.random.default_rng(opset).standard_normal((2, 3)).astype(np.float32)
    it = onnxscope.LinearScope(model).interpret(x)
    assert it.verify().ok
    np.testing.assert_array_equal(it.apply(x[None])[0], np.maximum(x, 0))
