"""What changed between two inputs (issue 18, part 2): `onnxscope.compare` and `onnxscope diff`.

The flips are checked against a direct comparison made outside onnxscope (torch's own
pre-activations and MaxPool indices at both inputs); the ‖A₁ − A₂‖ estimate against the exact
Frobenius norms of a model whose A_x is known in closed form; the path against the fact that a
piecewise-linear network's A_x does not change where no decision flips."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
from helpers import make_model

import onnxscope
from onnxscope.cli import main
from onnxscope.errors import InputError

torch = pytest.importorskip("torch")


class ReluClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 5)

    def forward(self, x, record=None):
        u1 = self.conv1(x)
        y1 = torch.relu(u1)
        p, where = torch.nn.functional.max_pool2d(y1, 2, return_indices=True)
        u2 = self.conv2(p)
        y2 = torch.relu(u2)
        if record is not None:
            record.update(u1=u1, pool=where, u2=u2)
        return self.fc(y2.flatten(1))


def _exported(module, x) -> onnx.ModelProto:
    class Plain(torch.nn.Module):  # the export without the recording argument
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            return self.inner(x)

    buffer = io.BytesIO()
    torch.onnx.export(Plain(), (x,), buffer, dynamo=False, opset_version=17, input_names=["x"])
    return onnx.load_from_string(buffer.getvalue())


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    module = ReluClassifier().eval()
    x1 = torch.randn(1, 3, 8, 8)
    x2 = x1 + 0.05 * torch.randn(1, 3, 8, 8)
    return module, onnxscope.LinearScope(_exported(module, x1)), x1.numpy(), x2.numpy()


def test_the_flips_equal_a_direct_comparison_of_the_two_inputs_decisions(classifier):
    module, scope, x1, x2 = classifier
    found = onnxscope.compare(scope, x1, x2)
    seen1, seen2 = {}, {}
    with torch.no_grad():
        module(torch.from_numpy(x1), seen1)
        module(torch.from_numpy(x2), seen2)
    direct = [
        int(((seen1["u1"] > 0) != (seen2["u1"] > 0)).sum()),
        int((seen1["pool"] != seen2["pool"]).sum()),
        int(((seen1["u2"] > 0) != (seen2["u2"] > 0)).sum()),
    ]
    assert [layer.op for layer in found.layers] == ["Relu", "MaxPool", "Relu"]
    assert [layer.changed for layer in found.layers] == direct
    assert sum(direct) > 0  # the perturbation flips something: the comparison is not vacuous
    assert [layer.total for layer in found.layers] == [8 * 64, 8 * 16, 8 * 16]
    assert found.flips == sum(direct) and all(layer.discrete for layer in found.layers)
    assert found.layers[0].spatial.shape == (8, 8)
    assert found.layers[0].spatial.sum() == direct[0]
    assert found.linear_change > 0


def test_along_the_path_A_x_is_constant_between_flips(classifier):
    _, scope, x1, x2 = classifier
    steps = 12
    found = onnxscope.compare(scope, x1, x2, steps=steps)
    assert len(found.path) == steps
    z = np.random.default_rng(3).standard_normal((2, *x1.shape)).astype(np.float32)
    quiet, moved = 0, 0
    for segment in found.path:
        a0 = scope.interpret(_point(x1, x2, segment.t0)).apply(z)
        a1 = scope.interpret(_point(x1, x2, segment.t1)).apply(z)
        gap = np.abs(a1 - a0).max() / np.abs(a0).max()
        if segment.flips == 0:
            quiet += 1
            assert gap < 1e-6, f"A_x moved on [{segment.t0}, {segment.t1}] without a flip"
        else:  # (a flip a later unit masks, in a window MaxPool does not pick, moves nothing)
            moved += gap > 1e-6
    assert quiet and moved  # both kinds of segment were seen: the check can fail


def _point(x1, x2, t):
    return (x1.astype(np.float64) + t * (x2.astype(np.float64) - x1)).astype(np.float32)


def test_class_votes_and_bias_add_up_at_both_inputs(classifier):
    _, scope, x1, x2 = classifier
    found = onnxscope.compare(scope, x1, x2, classes=[0, 3])
    assert [c.index for c in found.classes] == [0, 3]
    for c in found.classes:
        for k in range(2):
            assert c.votes[k] + c.bias[k] == pytest.approx(c.output[k], rel=1e-5, abs=1e-6)
    top = onnxscope.compare(scope, x1, x2)  # the top class at x1 and at x2
    assert top.classes[0].index == int(np.argmax(scope.interpret(x1).output))


def test_the_linear_change_estimate_matches_the_exact_frobenius_ratio():
    """y = W·Relu(x): A_x = W·diag(1[x > 0]), so ‖A₂ − A₁‖_F and ‖A₁‖_F are known exactly."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((6, 40)).astype(np.float32)
    model = make_model(["r = Relu(x)", "y = MatMul(r, Wt)"], {"x": (1, 40)}, inits={"Wt": W.T})
    scope = onnxscope.LinearScope(model)
    x1 = rng.standard_normal((1, 40)).astype(np.float32)
    x2 = x1.copy()
    x2[0, :10] *= -1  # ten decisions flip
    found = onnxscope.compare(scope, x1, x2, probes=400)
    d1, d2 = (x1[0] > 0).astype(float), (x2[0] > 0).astype(float)
    exact = np.linalg.norm(W * (d2 - d1)) / np.linalg.norm(W * d1)
    assert found.flips == 10
    assert found.linear_change == pytest.approx(exact, rel=0.15)
    assert found.linear_norm[0] == pytest.approx(np.linalg.norm(W * d1), rel=0.15)


def test_gains_move_rather_than_flip():
    model = make_model(["s = Sigmoid(x)", "y = Mul(s, x)"], {"x": (1, 4, 3, 3)})
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    x2 = x1 + np.float32(0.1)
    found = onnxscope.compare(onnxscope.LinearScope(model), x1, x2)
    floats = [layer for layer in found.layers if not layer.discrete]
    assert floats and found.flips == 0
    moved = max(floats, key=lambda layer: layer.largest_move)
    sigmoid = 1 / (1 + np.exp(-x1.astype(np.float64)))
    assert moved.largest_move == pytest.approx(
        np.abs(1 / (1 + np.exp(-x2.astype(np.float64))) - sigmoid).max(), rel=1e-4
    )
    assert moved.changed == moved.total and moved.spatial.shape == (3, 3)


def test_bad_arguments_are_named(classifier):
    _, scope, x1, _ = classifier
    with pytest.raises(InputError, match="differ in shape"):
        onnxscope.compare(scope, x1, x1[:, :2])
    with pytest.raises(InputError, match="probes"):
        onnxscope.compare(scope, x1, x1, probes=0)
    with pytest.raises(InputError, match="steps"):
        onnxscope.compare(scope, x1, x1, steps=-1)


def test_diff_on_the_command_line(classifier, tmp_path, capsys):
    module, scope, x1, x2 = classifier
    model = tmp_path / "m.onnx"
    onnx.save(_exported(module, torch.from_numpy(x1)), model)
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, x1)
    np.save(b, x2)
    assert main(["diff", str(model), str(a), str(b), "--json", "--steps", "3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    found = onnxscope.compare(scope, x1, x2, steps=3)
    assert shown["flips"] == found.flips and len(shown["path"]) == 3
    assert [layer["changed"] for layer in shown["layers"]] == [
        layer.changed for layer in found.layers
    ]
    page = tmp_path / "diff"
    assert main(["diff", str(model), str(a), "--noise", "0.01", "--report", str(page)]) == 0
    out = capsys.readouterr().out
    assert "decisions flipped:" in out and "A + noise (0.01" in out
    text = (tmp_path / "diff.html").read_text()
    assert "What changed between two inputs" in text and "data:image/png;base64" in text
    assert main(["diff", str(model), str(a)]) == 2
    assert "give B or --noise" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "diff.html", "m.onnx"]
