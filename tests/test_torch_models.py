"""End-to-end checks of onnxscope on small PyTorch architectures exported to ONNX.

For every model × exporter: the interpretation at x reconstructs F(x) (A_x x + c_x) and is linear,
its model outputs equal the torch forward and a plain ONNX Runtime run of the exported model.
For the piecewise-linear networks, A_x z and the columns A_x e_j equal torch's Jacobian-vector
products at x, and for the ResNet c_x agrees with F(x) − A_x x.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import onnxscope  # noqa: E402
from onnxscope.converters.pytorch import export  # noqa: E402

try:  # tests/ as a package, or (pytest's default rootdir-less import) as a plain directory
    from . import torch_models as tm  # noqa: E402
except ImportError:
    import torch_models as tm  # noqa: E402

EXACT = 1e-5  # reconstruction, linearity, Jacobian agreement (relative, float32)

# (architecture, exporter): the legacy TorchScript exporter for all, dynamo for a few
CASES = [(name, "legacy") for name in tm.ARCHITECTURES] + [
    ("resnet", "dynamo"),
    ("convnext", "dynamo"),
    ("leaky_prelu", "dynamo"),
]

# Known onnxscope bugs, as (test, architecture, exporter) -> reason; the tests stay real checks.
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


def cases(test: str, names=None):
    out = []
    for name, exporter in CASES:
        if names is not None and name not in names:
            continue
        reason = KNOWN_BUGS.get((test, name, exporter))
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(name, exporter, marks=marks, id=f"{name}-{exporter}"))
    return out


PIECEWISE = [n for n, (_, _, pw) in tm.ARCHITECTURES.items() if pw]
JACOBIAN_MODELS = ["resnet", "leaky_prelu"]  # ReLU/LeakyReLU/PReLU/MaxPool only (plus BN/affine)


@dataclasses.dataclass
class Case:
    name: str
    exporter: str
    module: torch.nn.Module
    x: torch.Tensor
    path: str
    scope: onnxscope.LinearScope | None = None
    _it: onnxscope.Interpretation | None = None

    @property
    def x_np(self) -> np.ndarray:
        return self.x.numpy()

    @property
    def it(self) -> onnxscope.Interpretation:
        if self._it is None:
            self.scope = onnxscope.LinearScope(self.path)
            self._it = self.scope.interpret(self.x_np)
        return self._it

    def forward(self) -> np.ndarray:
        with torch.no_grad():
            return self.module(self.x).numpy()

    def jvp(self, tangents: np.ndarray) -> np.ndarray:
        """Rows of torch.func.jvp(F, x, t) for every tangent t (shaped like x)."""
        outs = []
        for t in tangents:
            _, dy = torch.func.jvp(self.module, (self.x,), (torch.from_numpy(np.ascontiguousarray(t)),))
            outs.append(dy.detach().numpy())
        return np.stack(outs)


@pytest.fixture(scope="module")
def model_case(tmp_path_factory):
    """Export each (architecture, exporter) once per module; interpretation is made lazily."""
    cache: dict[tuple[str, str], Case] = {}

    def get(name: str, exporter: str) -> Case:
        key = (name, exporter)
        if key not in cache:
            module, x = tm.build(name)
            path = tmp_path_factory.mktemp(f"{name}-{exporter}") / f"{name}.onnx"
            export(module, x, path, dynamo=exporter == "dynamo")
            cache[key] = Case(name, exporter, module, x, str(path))
        return cache[key]

    return get


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def test_registry_covers_the_brief():
    assert {"resnet", "mobilenetv3", "unet", "cyclegan", "convnext", "leaky_prelu",
            "efficientnet"} <= set(tm.ARCHITECTURES)


# -- every model ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "exporter"), cases("verify"))
def test_verify(model_case, name, exporter):
    case = model_case(name, exporter)
    errors = case.it.verify()
    print(f"{name}-{exporter}: {errors}")
    assert errors["reconstruction"] <= EXACT, errors
    assert errors["linearity"] <= EXACT, errors


@pytest.mark.parametrize(("name", "exporter"), cases("output_torch"))
def test_output_matches_torch(model_case, name, exporter):
    case = model_case(name, exporter)
    y = case.forward()
    out = case.it.output
    assert out.shape == y.shape
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-4 * float(np.abs(y).max()))


@pytest.mark.parametrize(("name", "exporter"), cases("output_ort"))
def test_mask_graph_outputs_match_plain_model(model_case, name, exporter):
    """The mask graph's model outputs equal a plain ONNX Runtime run of the exported model."""
    case = model_case(name, exporter)
    sess = ort.InferenceSession(case.path, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: case.x_np})
    out = case.it.output
    assert out.shape == y.shape and out.dtype == y.dtype
    # the mask graph exposes pre-activations, which can block ORT's fusions: float rounding only
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5 * float(np.abs(y).max()))


# -- piecewise-linear networks: A_x is the Jacobian at x --------------------------------------
@pytest.mark.parametrize(("name", "exporter"), cases("jvp", JACOBIAN_MODELS + ["unet"]))
def test_apply_equals_jvp(model_case, name, exporter):
    case = model_case(name, exporter)
    rng = np.random.default_rng(7)
    z = rng.standard_normal((5, *case.x.shape)).astype(np.float32)
    got = case.it.apply(z)
    want = case.jvp(z)
    assert got.shape == want.shape == (5, *case.it.output.shape)
    errs = [rel(g, w) for g, w in zip(got, want)]
    print(f"{name}-{exporter}: apply vs jvp {max(errs):.2e}")
    assert max(errs) <= EXACT, errs


@pytest.mark.parametrize(("name", "exporter"), cases("columns", JACOBIAN_MODELS))
def test_columns_equal_jvp_one_hot(model_case, name, exporter):
    case = model_case(name, exporter)
    n = case.x.numel()
    rng = np.random.default_rng(11)
    idx = np.concatenate([[0, n - 1], rng.choice(n, 6, replace=False)])
    got = case.it.columns(idx)
    onehot = np.zeros((len(idx), n), np.float32)
    onehot[np.arange(len(idx)), idx] = 1
    want = case.jvp(onehot.reshape(len(idx), *case.x.shape))
    assert got.shape == want.shape
    scale = np.linalg.norm(want.reshape(len(idx), -1), axis=1).max()
    errs = np.linalg.norm((got - want).reshape(len(idx), -1), axis=1) / scale
    print(f"{name}-{exporter}: columns vs jvp {errs.max():.2e}")
    assert errs.max() <= EXACT, errs


@pytest.mark.parametrize(("name", "exporter"), cases("bias", ["resnet"]))
def test_bias_consistent_with_output(model_case, name, exporter):
    """c_x is computed by onnxscope as the affine twin at z = 0; it must match F(x) − A_x x."""
    case = model_case(name, exporter)
    it = case.it
    c = it.bias
    residual = case.forward().astype(np.float64) - it.apply(case.x_np[None])[0].astype(np.float64)
    assert np.linalg.norm(c) > 1e-3 * np.linalg.norm(it.output)  # BN / biases make c_x non-trivial
    err = rel(c, residual)
    print(f"{name}-{exporter}: bias vs F - Ax {err:.2e}")
    assert err <= 1e-4


@pytest.mark.parametrize("name", PIECEWISE)
def test_piecewise_models_have_no_secant_units(name):
    """Guard the choice of Jacobian models: only piecewise-linear units in them."""
    module, _ = tm.build(name)
    smooth = (torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.GELU, torch.nn.SiLU, torch.nn.Hardswish,
              torch.nn.Hardsigmoid, torch.nn.InstanceNorm2d, torch.nn.LayerNorm)
    assert not [m for m in module.modules() if isinstance(m, smooth)]
