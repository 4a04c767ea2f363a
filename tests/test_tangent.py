"""Tangent mode (issue 18, part 1): `LinearScope(model, mode="tangent")` makes A_x the Jacobian
J_x of F at x, with F(x) = J_x x + c_x still exact and c_x from the affine twin at z = 0.

- Every smooth op the rules know, alone in a float64 model: verify() passes, the columns A_x e_j
  equal central finite differences of the model (so A_x is the Jacobian), the rows A_x^T e_i equal
  the columns transposed (the adjoint graph is the VJP), and the secant mode still reconstructs.
- Small PyTorch models (SiLU, GELU as an Erf chain and as the Gelu op, Sigmoid, Tanh, Softmax,
  LayerNorm, a squeeze-and-excitation block, an attention block) through both torch exporters:
  rows equal torch.func.vjp and columns torch.func.jvp to 1e-5; both modes reconstruct F(x).
- A ReLU CNN with MaxPool: the two modes give identical rows and columns.
- Where a rule has no tangent form, the node is refused in tangent mode (never the secant).
- The CLI names the mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import make_model, session

import onnxscope
from onnxscope.errors import UnsupportedModelError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "samples")]
from architectures import torch_models as tm  # noqa: E402

from converters.pytorch import export  # noqa: E402

EXACT = 1e-5  # float32 agreement with torch and reconstruction
# fourth-order central differences (error ~ h^4 f^(5) + eps |f| / h), relative tolerances
FD_STEP = {np.float64: 1e-3, np.float32: 1e-2}
FD_RTOL = {np.float64: 1e-8, np.float32: 1e-4}
ROUNDING = {np.float64: 1e-12, np.float32: 1e-6}  # reconstruction, rows vs columns
MODES = ("secant", "tangent")


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def reconstruction(it) -> float:
    """‖F(x) − (A_x x + c_x)‖ / ‖F(x)‖ from the apply and bias of `it`."""
    return rel(it.apply(it.x[None])[0] + it.bias, it.output)


# -- single ops, float64, against central differences --------------------------------------------

F64 = np.float64
SHAPE = (2, 6)
MASK = np.where(np.arange(SHAPE[1]) % 3 == 1, -np.inf, 0.0)
# ops ONNX Runtime 1.32 runs in float32 only: their checks run in float32
FLOAT32_ONLY = {"Erf", "Elu", "Celu", "Selu", "Softplus", "Softsign", "Gelu", "HardSwish"}
FLOAT32_ONLY |= {"InstanceNorm", "GroupNorm"}
# name: (nodes, opset, initializers[, input shape: SHAPE]); the input is a standard normal draw
# (`op_input`)
OPS = {
    "Sigmoid": (["y = Sigmoid(x)"], 17, {}),
    "Tanh": (["y = Tanh(x)"], 17, {}),
    "Erf": (["y = Erf(x)"], 17, {}),
    "Elu": (["y = Elu <alpha=0.7> (x)"], 17, {}),
    "Celu": (["y = Celu <alpha=1.3> (x)"], 17, {}),
    "Selu": (["y = Selu(x)"], 17, {}),
    "Softplus": (["y = Softplus(x)"], 17, {}),
    "Softsign": (["y = Softsign(x)"], 17, {}),
    "Gelu": (["y = Gelu(x)"], 20, {}),
    "Gelu_tanh": (['y = Gelu <approximate="tanh"> (x)'], 20, {}),
    "Mish": (["y = Mish(x)"], 18, {}),
    "Exp": (["y = Exp(x)"], 17, {}),
    "HardSwish": (["y = HardSwish(x)"], 17, {}),
    "Sqrt": (["e = Exp(x)", "y = Sqrt(e)"], 17, {}),
    "Reciprocal": (["e = Exp(x)", "y = Reciprocal(e)"], 17, {}),
    "Pow": (["y = Pow(x, p)"], 17, {"p": np.array(3.0)}),
    "Pow_both": (["e = Exp(x)", "s = Sigmoid(x)", "y = Pow(e, s)"], 17, {}),  # e^(x sigmoid(x))
    "Softmax": (["y = Softmax <axis=-1> (x)"], 17, {}),
    "LogSoftmax": (["y = LogSoftmax <axis=-1> (x)"], 17, {}),
    # masked attention scores: -inf where masked, the output 0 there
    "Softmax_masked": (["u = Add(x, mask)", "y = Softmax <axis=-1> (u)"], 17, {"mask": MASK}),
    "Mul_self": (["s = Sigmoid(x)", "y = Mul(x, s)"], 17, {}),  # SiLU written out
    "Mul_square": (["y = Mul(x, x)"], 17, {}),
    "Mul_self_opset9": (["s = Sigmoid(x)", "y = Mul(x, s)"], 9, {}),  # Equal without floats
    # opset < 13: softmax over the flattened axes from `axis` on
    "Softmax_opset11": (["y = Softmax <axis=1> (x)"], 11, {}, (2, 3, 2)),
    "Div_both": (["e = Exp(x)", "d = Add(e, one)", "y = Div(x, d)"], 17, {"one": np.array(1.0)}),
    "Div_denominator": (["e = Exp(x)", "y = Div(one, e)"], 17, {"one": np.array(2.0)}),
    "MatMul_both": (["t = Transpose(x)", "y = MatMul(x, t)"], 17, {}),
    "Gemm_both": (["t = Tanh(x)", "y = Gemm <transB=1, alpha=0.5> (x, t, x2)"], 17, {}),
    "LayerNorm": (
        ["y = LayerNormalization <axis=-1> (x, g, b)"],
        17,
        {"g": np.linspace(0.5, 1.5, SHAPE[1]), "b": np.linspace(-1, 1, SHAPE[1])},
    ),
    "InstanceNorm": (
        ["y = InstanceNormalization <epsilon=0.01> (x, s, b)"],
        17,
        {"s": np.array([1.0, 2.0, 0.5]), "b": np.array([0.0, 1.0, -1.0])},
        (1, 3, 2, 4),
    ),
    "GroupNorm": (
        ["y = GroupNormalization <num_groups=2, epsilon=0.01> (x, s, b)"],
        21,
        {"s": np.array([1.0, 2.0, 0.5, 1.5]), "b": np.array([0.0, 1.0, -1.0, 0.2])},
        (1, 4, 2, 3),
    ),
    "LayerNorm_written_out": (
        [
            "m = ReduceMean <axes=[1]> (x)",
            "c = Sub(x, m)",
            "s = Mul(c, c)",
            "v = ReduceMean <axes=[1]> (s)",
            "ve = Add(v, eps)",
            "d = Sqrt(ve)",
            "y = Div(c, d)",
        ],
        17,
        {"eps": np.array(1e-5)},
    ),
}


def op_dtype(name: str):
    return np.float32 if name.split("_")[0] in FLOAT32_ONLY else np.float64


def op_shape(name: str) -> tuple[int, ...]:
    return OPS[name][3] if len(OPS[name]) > 3 else SHAPE


def op_model(name: str):
    nodes, opset, inits = OPS[name][:3]
    dtype = op_dtype(name)
    inits = {k: np.asarray(v, dtype) for k, v in inits.items()}
    if name == "Gemm_both":
        inits["x2"] = np.full((SHAPE[0], SHAPE[0]), 0.25, dtype)
    return make_model(nodes, {"x": (op_shape(name), dtype)}, inits=inits, opset=opset)


def op_input(name: str) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal(op_shape(name))
    if name == "HardSwish":  # keep off the kinks at +-3 and include both saturated pieces
        x = np.concatenate([x[:1] * 1.2, np.array([[-4.5, -2.0, 0.3, 1.7, 2.6, 5.0]])])
    return x.astype(op_dtype(name))


def central_jacobian(model, x: np.ndarray) -> np.ndarray:
    """[out.size, x.size] by fourth-order central differences of the model in ONNX Runtime:
    (-F(x + 2h e_j) + 8 F(x + h e_j) - 8 F(x - h e_j) + F(x - 2h e_j)) / 12h."""
    sess, h = session(model), FD_STEP[x.dtype.type]
    name = sess.get_inputs()[0].name
    columns = []
    for j in range(x.size):
        f = {}
        for k in (-2, -1, 1, 2):
            xs = x.copy().reshape(-1)
            xs[j] += k * h
            f[k] = sess.run(None, {name: xs.reshape(x.shape)})[0].astype(np.float64)
        columns.append(((f[-2] - f[2] + 8 * (f[1] - f[-1])) / (12 * h)).reshape(-1))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("name", list(OPS))
def test_op_tangent_is_the_jacobian(name):
    model, x = op_model(name), op_input(name)
    dtype = x.dtype.type
    it = onnxscope.LinearScope(model, mode="tangent").interpret(x)
    v = it.verify(tol=ROUNDING[dtype])
    assert v.ok, f"{name}: {v}"
    jacobian = central_jacobian(model, x)
    columns = it.columns(list(range(x.size))).reshape(x.size, -1).T
    assert rel(columns, jacobian) < FD_RTOL[dtype], f"{name}: columns vs central differences"
    rows = it.rows(list(range(jacobian.shape[0]))).reshape(jacobian.shape[0], -1)
    assert rel(rows, columns) < ROUNDING[dtype], f"{name}: rows are not the columns transposed"
    assert reconstruction(it) < ROUNDING[dtype]
    secant = onnxscope.LinearScope(model).interpret(x)
    assert reconstruction(secant) < ROUNDING[dtype], f"{name}: the secant no longer reconstructs"
    secant_columns = secant.columns(list(range(x.size))).reshape(x.size, -1).T
    assert rel(secant_columns, jacobian) > 1e-2, f"{name}: the secant is the Jacobian here"


def test_hardswish_tangent_differs_from_its_secant():
    # on the ramp the secant gain is u/6 + 1/2, the derivative u/3 + 1/2
    model, x = op_model("HardSwish"), op_input("HardSwish")
    j = [8]  # x = 0.3, on the ramp
    tangent = onnxscope.LinearScope(model, mode="tangent").interpret(x).columns(j)
    secant = onnxscope.LinearScope(model).interpret(x).columns(j)
    assert tangent.reshape(-1)[8] == pytest.approx(0.3 / 3 + 0.5)
    assert secant.reshape(-1)[8] == pytest.approx(0.3 / 6 + 0.5)


def test_tangent_bias_is_the_affine_twin_at_zero():
    # y = x * sigmoid(x): c_x = y0 - J x elementwise, with J = s + x s (1 - s)
    model, x = op_model("Mul_self"), op_input("Mul_self")
    it = onnxscope.LinearScope(model, mode="tangent").interpret(x)
    s = 1 / (1 + np.exp(-x))
    slope = s + x * s * (1 - s)
    np.testing.assert_allclose(it.bias, x * s - slope * x, rtol=1e-12, atol=1e-15)
    assert it.scope.mode == "tangent"


# -- PyTorch models, both exporters, against torch.func ----------------------------------------


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, 4, 1), nn.Conv2d(4, channels, 1)

    def forward(self, x):
        gate = torch.sigmoid(self.expand(F.silu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * gate


class SmoothNet(nn.Module):
    """SiLU, an SE block, GELU, Tanh, LayerNorm and a Softmax head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.se = SqueezeExcite(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.norm = nn.LayerNorm(72)
        self.head = nn.Linear(72, 5)

    def forward(self, x):
        x = self.se(F.silu(self.conv1(x)))
        x = torch.tanh(F.gelu(self.conv2(x))).flatten(1)
        return torch.softmax(self.head(self.norm(x)), -1)


class AttentionNet(nn.Module):
    """One pre-norm self-attention block (softmax(q k^T / sqrt(d)) v), a tanh-GELU MLP."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 4)
        self.scale = dim**-0.5

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        attention = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        x = x + self.proj(attention @ v)
        x = x + self.mlp(F.gelu(self.norm2(x), approximate="tanh"))
        return self.head(x.mean(1))


MODELS = {"smooth": (SmoothNet, (1, 3, 8, 8)), "attention": (AttentionNet, (1, 6, 8))}
# (exporter, opset): GELU is an Erf chain below opset 20 and one Gelu op from 20
EXPORTS = [("legacy", 17), ("dynamo", 18), ("legacy", 20)]
EXPECTED_OPS = {
    ("smooth", 17): {"Sigmoid", "Erf", "Tanh", "LayerNormalization", "Softmax", "Mul"},
    ("smooth", 20): {"Gelu", "Sigmoid", "Tanh", "LayerNormalization", "Softmax"},
    ("attention", 17): {"MatMul", "Softmax", "LayerNormalization", "Tanh"},
    ("attention", 20): {"MatMul", "Softmax", "LayerNormalization", "Gelu"},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(name: str, exporter: str, opset: int):
        key = (name, exporter, opset)
        if key not in cache:
            ctor, shape = MODELS[name]
            torch.manual_seed(0)
            module = ctor().eval()
            x = torch.randn(shape)
            path = tmp_path_factory.mktemp(f"{name}-{exporter}-{opset}") / f"{name}.onnx"
            export(module, x, path, dynamo=exporter == "dynamo", opset=opset)
            cache[key] = (module, x, str(path))
        return cache[key]

    return get


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("exporter", "opset"), EXPORTS)
def test_torch_model_tangent_equals_torch_func(exported, name, exporter, opset):
    import onnx

    module, x, path = exported(name, exporter, opset)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    expected = EXPECTED_OPS.get((name, 20 if opset >= 20 else 17), set())
    assert expected <= ops, f"the export lacks {expected - ops}: the test would not cover them"
    it = onnxscope.LinearScope(path, mode="tangent").interpret(x.numpy())
    verification = it.verify()
    assert verification.ok, verification
    assert reconstruction(it) < EXACT
    out_size = it.output.size
    # rows: A_x^T e_i against torch.func.vjp
    _, pullback = torch.func.vjp(module, x)
    eye = torch.eye(out_size).reshape(out_size, *it.output.shape)
    want_rows = np.stack([pullback(e)[0].detach().numpy() for e in eye])
    rows = it.rows(list(range(out_size)))
    assert rel(rows, want_rows) < EXACT, "rows vs torch.func.vjp"
    # columns: A_x e_j against torch.func.jvp, on a spread of input elements
    js = list(np.random.default_rng(0).choice(x.numel(), 12, replace=False))
    tangents = torch.eye(x.numel())[js].reshape(len(js), *x.shape)
    want_cols = np.stack([torch.func.jvp(module, (x,), (t,))[1].detach().numpy() for t in tangents])
    assert rel(it.columns(js), want_cols) < EXACT, "columns vs torch.func.jvp"
    secant = onnxscope.LinearScope(path).interpret(x.numpy())
    assert reconstruction(secant) < EXACT
    assert rel(secant.rows(list(range(out_size))), want_rows) > 1e-3  # (the secant is not J)


def test_float64_attention_columns_equal_central_differences(tmp_path):
    # the attention block in float64 end to end (ONNX Runtime has no float64 Conv for the CNN)
    import onnx

    torch.manual_seed(0)
    module, x = AttentionNet().double().eval(), torch.randn(1, 6, 8, dtype=torch.float64)
    path = tmp_path / "attention64.onnx"
    export(module, x, path, dynamo=False, opset=17)
    model = onnx.load(path)
    it = onnxscope.LinearScope(model, mode="tangent").interpret(x.numpy())
    columns = it.columns(list(range(x.numel()))).reshape(x.numel(), -1).T
    assert rel(columns, central_jacobian(model, x.numpy())) < FD_RTOL[np.float64]
    assert reconstruction(it) < ROUNDING[np.float64]
    assert it.verify(tol=ROUNDING[np.float64]).ok


def test_float32_cnn_columns_equal_float64_central_differences(exported):
    # onnxscope's float32 tangent against central differences of torch's float64 forward
    module, x, path = exported("smooth", "legacy", 17)
    it = onnxscope.LinearScope(path, mode="tangent").interpret(x.numpy())
    js, h = list(range(0, x.numel(), 7)), 1e-4
    module64, x64 = module.double(), x.double()
    try:
        with torch.no_grad():
            fd = []
            for j in js:
                step = torch.zeros(x.numel(), dtype=torch.float64)
                step[j] = h
                step = step.reshape(x.shape)
                fd.append(((module64(x64 + step) - module64(x64 - step)) / (2 * h)).numpy())
    finally:
        module.float()
    assert rel(it.columns(js), np.stack(fd)) < EXACT


class ReluCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3)
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_piecewise_linear_net_same_in_both_modes(tmp_path, exporter):
    torch.manual_seed(0)
    module, x = ReluCNN().eval(), torch.randn(1, 3, 12, 12)
    path = tmp_path / "relu.onnx"
    export(module, x, path, dynamo=exporter == "dynamo")
    its = {m: onnxscope.LinearScope(str(path), mode=m).interpret(x.numpy()) for m in MODES}
    rows = {m: it.rows(list(range(5))) for m, it in its.items()}
    np.testing.assert_array_equal(rows["tangent"], rows["secant"])
    js = [0, 100, 431]
    np.testing.assert_array_equal(its["tangent"].columns(js), its["secant"].columns(js))
    np.testing.assert_array_equal(its["tangent"].bias, its["secant"].bias)
    _, pullback = torch.func.vjp(module, x)
    want = np.stack([pullback(e[None])[0].detach().numpy() for e in torch.eye(5)])
    assert rel(rows["tangent"], want) < EXACT
    assert its["tangent"].verify().ok


# -- refusals ------------------------------------------------------------------------------


def test_input_dependent_conv_weights_are_refused_in_tangent_mode():
    w = np.random.default_rng(0).standard_normal((2, 1, 1, 1)).astype(np.float32)
    model = make_model(
        ["s = Mul(x, w0)", "k = Reshape(s, shape)", "y = Conv(x, k)"],
        {"x": (2, 1, 1, 1)},
        inits={"w0": w, "shape": np.array([2, 1, 1, 1])},
    )
    x = w * 0.5
    onnxscope.LinearScope(model).interpret(x)
    with pytest.raises(UnsupportedModelError) as info:
        onnxscope.LinearScope(model, mode="tangent").interpret(x)
    message = str(info.value)
    assert "Conv" in message and "tangent mode" in message and "freezes" in message


def test_unknown_mode_is_refused():
    with pytest.raises(onnxscope.errors.InputError, match="mode"):
        onnxscope.LinearScope(op_model("Tanh"), mode="secnt")


# -- artifacts and the CLI name the mode -------------------------------------------------------


def test_artifacts_and_cli_name_the_mode(tmp_path):
    model = op_model("Mul_self")
    path = tmp_path / "silu.onnx"
    path.write_bytes(model.SerializeToString())
    scope = onnxscope.LinearScope(str(path), mode="tangent")
    files = scope.artifacts({"x": SHAPE}).files()
    assert json.loads(files["manifest.json"])["mode"] == "tangent"
    import onnx

    linear = onnx.load_from_string(files["linear.onnx"])
    assert {p.key: p.value for p in linear.metadata_props}["onnxscope.mode"] == "tangent"
    secant_files = onnxscope.LinearScope(str(path)).artifacts({"x": SHAPE}).files()
    assert json.loads(secant_files["manifest.json"])["mode"] == "secant"
    assert not onnx.load_from_string(secant_files["linear.onnx"]).metadata_props
    out = subprocess.run(
        [sys.executable, "-m", "onnxscope", "verify", str(path), "--mode", "tangent"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "tangent" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "onnxscope", "inspect", str(path), "--mode", "tangent", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    listed = json.loads(out.stdout)
    assert listed["mode"] == "tangent" and "product rule" in listed["units"][-1]["frozen"]


COMMANDS = {  # every command that builds a LinearScope, with its positional arguments
    "inspect": ["m.onnx"],
    "rewrite": ["m.onnx", "-o", "out"],
    "verify": ["m.onnx"],
    "rows": ["m.onnx", "-o", "r.npy"],
    "columns": ["m.onnx", "-o", "c.npy"],
    "votes": ["m.onnx", "-o", "v.npy"],
    "bias": ["m.onnx", "-o", "b.npy"],
    "svd": ["m.onnx", "-o", "s.npz"],
    "diff": ["m.onnx", "a.npy", "b.npy"],
    "report": ["m.onnx", "image.png", "-o", "out"],
    "batch": ["m.onnx", "images", "-o", "out"],
    "serve": ["m.onnx"],
    "triton": ["m.onnx", "-o", "repo"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_takes_the_mode(command):
    from onnxscope.cli import build_parser

    parser = build_parser()
    assert parser.parse_args([command, *COMMANDS[command]]).mode == "secant"
    args = parser.parse_args([command, *COMMANDS[command], "--mode", "tangent"])
    assert args.mode == "tangent"
    if command == "report":
        assert parser.parse_args([command, *COMMANDS[command], "--mode", "both"]).mode == "both"


def test_report_both_modes_side_by_side(exported):
    pytest.importorskip("matplotlib")
    from onnxscope.report import build_report

    module, x, path = exported("smooth", "legacy", 17)
    files = build_report(path, x.numpy(), mode="both", logits=True, top=2, progress=False)
    numbers = json.loads(files["report.json"])
    ((name, record),) = numbers["modes"].items()
    assert len(record) == 2 and all(f"modes_{name}_{r['index']}.png" in files for r in record)
    logits = onnxscope.LinearScope(path, logits=True).interpret(x.numpy()).outputs[name].ravel()
    for r in record:  # each mode's votes and bias add up to the same logit
        for mode in MODES:
            assert r["votes"][mode] + r["bias"][mode] == pytest.approx(logits[r["index"]], 1e-4)
        assert abs(r["votes"]["secant"] - r["votes"]["tangent"]) > 1e-3  # two different maps
    assert "tangent" in numbers["facts"]["mode"]


def test_batch_and_serve_take_the_mode(tmp_path):
    from onnxscope.batch.job import BatchJob, JobSpec

    path = tmp_path / "silu.onnx"
    path.write_bytes(op_model("Mul_self").SerializeToString())
    spec = JobSpec(model=str(path), mode="tangent")
    assert spec.settings()["mode"] == "tangent"
    assert "mode" not in JobSpec(model=str(path)).settings()  # secant folders as before
    assert BatchJob(spec).scope.mode == "tangent"
    pytest.importorskip("starlette")
    from onnxscope.serve.models import load

    plain, scope_reading = load(str(path), readings=("scope",), mode="tangent")
    assert {p.key: p.value for p in scope_reading.model.metadata_props}["onnxscope.mode"] == (
        "tangent"
    )


def test_tangent_readings_add_up(exported):
    # votes + bias = each output, and the bias split by layer sums to c_x, in tangent mode too
    module, x, path = exported("smooth", "dynamo", 18)
    it = onnxscope.LinearScope(path, mode="tangent").interpret(x.numpy())
    votes = it.votes([0, 1, 2]).reshape(3, -1).sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(votes + it.bias.ravel()[:3], it.output.ravel()[:3], rtol=1e-5)
    shares = sum(it.bias_by_layer().values())
    np.testing.assert_allclose(shares, it.bias, rtol=1e-5, atol=1e-6 * np.abs(it.bias).max())


@pytest.mark.parametrize("name", list(tm.ARCHITECTURES))
def test_suite_architectures_rows_equal_torch_vjp(tmp_path, name):
    # the test suite's architectures (samples/architectures/torch_models.py: hardswish, SE gates,
    # InstanceNorm, LayerNorm and GELU, SiLU...), legacy exporter: rows against torch.func.vjp
    module, x = tm.build(name)
    path = tmp_path / f"{name}.onnx"
    export(module, x, path, dynamo=False)
    it = onnxscope.LinearScope(str(path), mode="tangent").interpret(x.numpy())
    picked = np.random.default_rng(0).choice(it.output.size, min(4, it.output.size), replace=False)
    cotangents = np.zeros((len(picked), it.output.size), np.float32)
    cotangents[np.arange(len(picked)), picked] = 1
    want = tm.vjp(module, x, cotangents.reshape(len(picked), *it.output.shape))
    assert rel(it.rows(list(picked)), want) < EXACT
    assert it.verify().ok
