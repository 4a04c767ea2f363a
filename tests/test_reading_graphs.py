"""Issue 13, item 1: the reading graphs (votes, rows, columns, scope: rewrite/readings.py).

`check_model` (tests/helpers.py) checks every reading of every model it is given against the
Python API; these tests add what it does not reach: another output than the first, the names a
model already uses, models below the adjoint's opset, indices out of range, a model that does
not run on an empty batch, and the files `rewrite` writes.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from helpers import check_model, check_readings, make_model

import onnxscope
from onnxscope.errors import OnnxscopeError
from onnxscope.rewrite.readings import reading_graphs, unavailable

RNG = np.random.default_rng(13)


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def conv_net(opset: int = 17):
    """Conv -> Relu -> MaxPool -> Flatten -> Gemm, and a SiLU head as a second output."""
    nodes = [
        "c = Conv <pads=[1,1,1,1]> (x, W, B)",
        "r = Relu(c)",
        "p = MaxPool <kernel_shape=[2,2], strides=[2,2]> (r)",
        "f = Flatten(p)",
        "y = Gemm <transB=1> (f, G, gb)",
        "s = Sigmoid(y)",
        "y2 = Mul(s, y)",
    ]
    inits = {"W": normal(4, 2, 3, 3), "B": normal(4), "G": normal(5, 36), "gb": normal(5)}
    return make_model(nodes, {"x": (1, 2, 6, 6)}, outputs=["y", "y2"], inits=inits, opset=opset)


def test_the_readings_of_another_output():
    checked = check_model(conv_net(), {"x": normal(1, 2, 6, 6)})  # (reads y)
    check_readings(checked.it, output="y2")
    graphs = reading_graphs(checked.artifacts, output="y2")
    assert {g.output for g in graphs.values()} == {"y2"}
    with pytest.raises(OnnxscopeError, match="Unknown output 'z'"):
        reading_graphs(checked.artifacts, output="z")


def test_names_the_model_already_uses():
    # the model's own tensors are called classes, indices, votes, bias, rows and columns
    nodes = [
        "classes = Relu(x)",
        "indices = Add(classes, votes)",
        "rows = Relu(indices)",
        "columns = Mul(rows, bias)",
    ]
    inits = {"votes": normal(1, 3), "bias": normal(1, 3)}
    model = make_model(nodes, {"x": (1, 3)}, outputs=["columns"], inits=inits)
    checked = check_model(model, {"x": normal(1, 3)})  # check_readings feeds by g.names
    graphs = reading_graphs(checked.artifacts)
    assert graphs["votes"].names == {"classes": "classes_1", "votes": "votes_1", "bias": "bias_1"}
    assert [s.name for s in graphs["rows"].inputs] == ["x", "indices_1"]


@pytest.mark.parametrize("opset", [11, 13, 15])
def test_an_old_opset_whose_ops_mean_the_same_at_16(opset):
    # Conv, Relu, MaxPool, Flatten, Gemm, Sigmoid, Mul: each op's definition at 16 is its
    # definition at the model's opset, or one with more types (Relu-14, Mul-14): the reading
    # graphs declare 16 and keep the adjoint (check_model checked them against the Python API)
    checked = check_model(conv_net(opset=opset), {"x": normal(1, 2, 6, 6)})
    assert unavailable(checked.artifacts) == {}
    graphs = reading_graphs(checked.artifacts)
    assert {i.version for i in graphs["votes"].model.opset_import if i.domain == ""} == {16}
    assert {i.version for i in checked.artifacts.mask.opset_import if i.domain == ""} == {opset}


def test_an_old_opset_whose_ops_changed_by_16():
    # Softmax changed its meaning at 13 (one axis, not the flattened trailing dims): joining
    # the adjoint (opset 16) to the model's nodes would change it; votes and rows are
    # unavailable and say why, and scope keeps A_x z and c_x
    model = make_model(
        ["h = MatMul(x, W)", "y = Softmax <axis=1> (h)"],
        {"x": (1, 3, 4)},
        inits={"W": normal(4, 5)},
        opset=12,
    )
    checked = check_model(model, {"x": normal(1, 3, 4)})
    missing = unavailable(checked.artifacts)
    assert set(missing) == {"votes", "rows"}
    assert "op Softmax" in missing["votes"] and "opset 12" in missing["votes"]
    with pytest.raises(OnnxscopeError, match="No votes reading for this model: .*op Softmax"):
        reading_graphs(checked.artifacts, only=["votes"])
    scope = checked.artifacts.readings()["scope"]
    assert not any(s.name.startswith("adjoint/") for s in [*scope.inputs, *scope.outputs])


@pytest.mark.parametrize("reading", ["votes", "rows", "columns"])
def test_an_index_out_of_range_is_an_error_never_a_zero(reading):
    model = conv_net()
    it = onnxscope.LinearScope(model).interpret(normal(1, 2, 6, 6))
    graphs = reading_graphs(it.scope.artifacts({"x": (1, 2, 6, 6)}))
    g = graphs[reading]
    (index,) = g.index_sizes
    size = g.index_sizes[index]
    session = ort.InferenceSession(g.model.SerializeToString())
    for bad in (size, -size - 1):
        with pytest.raises(Exception, match="out of|bounds|range"):
            session.run(None, {"x": it.x, index: np.array([0, bad], np.int64)})
    # the extremes are fine, and -1 is the last element
    first_last = session.run(None, {"x": it.x, index: np.array([-size, -1], np.int64)})
    again = session.run(None, {"x": it.x, index: np.array([0, size - 1], np.int64)})
    for a, b in zip(first_last, again):
        np.testing.assert_array_equal(a, b)


def test_probes_are_required_where_the_model_does_not_run_on_an_empty_batch():
    # ONNX Runtime's Pad in wrap mode refuses a batch of no probes: scope.onnx's probes then
    # have no zero-length default, and the manifest says so
    model = make_model(
        ["r = Relu(x)", 'y = Pad <mode="wrap"> (r, pads)'],
        {"x": (1, 2, 3, 3)},
        inits={"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)},
        opset=19,
    )
    checked = check_model(model, {"x": normal(1, 2, 3, 3)})
    scope = checked.artifacts.readings()["scope"]
    assert scope.probe_default is None and not any(s.optional for s in scope.inputs)
    plain = reading_graphs(check_model(conv_net(), {"x": normal(1, 2, 6, 6)}).artifacts)
    assert plain["scope"].probe_default == 0
    assert [s.name for s in plain["scope"].inputs if s.optional] == [
        "linear/probe",
        "adjoint/probe:y",
        "adjoint/probe:y2",
    ]


def test_rewrite_writes_the_readings_of_the_named_output(tmp_path):
    from onnxscope.cli import main

    path = tmp_path / "net.onnx"
    path.write_bytes(conv_net().SerializeToString())
    out = tmp_path / "out"
    assert main(["rewrite", str(path), "-o", str(out), "--output-name", "y2"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    readings = manifest["readings"]
    assert sorted(readings) == ["columns", "rows", "scope", "votes"]
    assert {r["output"] for r in readings.values()} == {"y2"}
    x = normal(1, 2, 6, 6)
    it = onnxscope.LinearScope(str(path)).interpret(x)
    session = ort.InferenceSession(str(out / readings["rows"]["file"]))
    names = [o["name"] for o in readings["rows"]["outputs"]]
    got = dict(zip(names, session.run(names, {"x": x, "indices": np.array([4], np.int64)})))
    scale = np.abs(it.rows([4], "y2")).max()
    np.testing.assert_allclose(got["rows"], it.rows([4], "y2"), rtol=1e-6, atol=1e-6 * scale)
    assert main(["rewrite", str(path), "-o", str(tmp_path / "o2"), "--output-name", "z"]) == 2
    assert not (tmp_path / "o2").exists()


def test_the_votes_bias_counts_every_kind_of_constant():
    # conv and Gemm biases, a padding value, a sigmoid's intercept, an added constant, and an
    # output with no linear part at all
    nodes = [
        'q = Pad <mode="constant"> (x, pads, half)',
        "c = Conv (q, W, B)",
        "r = Relu(c)",
        "f = Flatten(r)",
        "h = Gemm <transB=1> (f, G, gb)",
        "s = Sigmoid(h)",
        "y = Add(s, k)",
        "n = Identity(k)",
    ]
    inits = {
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "half": np.array(0.5, np.float32),
        "W": normal(3, 2, 3, 3),
        "B": normal(3),
        "G": normal(4, 48),
        "gb": normal(4),
        "k": normal(4),
    }
    model = make_model(nodes, {"x": (1, 2, 4, 4)}, outputs=["y", "n"], inits=inits)
    checked = check_model(model, {"x": normal(1, 2, 4, 4)})  # (checks votes' bias, reading y)
    check_readings(checked.it, output="n")  # the constant output: c = k, no votes


def test_rewrite_writes_the_readings_asked_for(tmp_path):
    from onnxscope.cli import main

    path = tmp_path / "net.onnx"
    path.write_bytes(conv_net().SerializeToString())
    assert main(["rewrite", str(path), "-o", str(tmp_path / "a"), "--readings", "votes"]) == 0
    assert sorted(json.loads((tmp_path / "a" / "manifest.json").read_text())["readings"]) == [
        "votes"
    ]
    assert not (tmp_path / "a" / "scope.onnx").exists()
    assert main(["rewrite", str(path), "-o", str(tmp_path / "b"), "--readings", ""]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.suffix == ".onnx") == [
        "adjoint.onnx",
        "bias.onnx",
        "linear.onnx",
        "mask.onnx",
    ]
    assert main(["rewrite", str(path), "-o", str(tmp_path / "c"), "--readings", "vote"]) == 2
    assert not (tmp_path / "c").exists()
