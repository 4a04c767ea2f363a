"""End-to-end checks of onnxscope on small PyTorch architectures exported to ONNX.

For every model × exporter: the interpretation at x reconstructs F(x) (A_x x + c_x) and is linear;
its model outputs equal the torch forward and a plain ONNX Runtime run of the exported model; and
A_x z and c_x equal an independent torch reference of the frozen network
(samples/architectures/torch_models.py, computed in float64). For the piecewise-linear networks,
A_x z and the columns A_x e_j equal torch's Jacobian-vector products at x, and for the ResNet c_x
agrees with F(x) − A_x x.

The transposed (adjoint) interpreter A_x^T, run from its own ONNX graph: verify()'s adjoint
identity |<A z, w> − <z, A^T w>| ≤ 1e-5·‖A z‖‖w‖ for every model × exporter, and the same identity
over a grid of probes and cotangents; A_x^T w equals the torch reference's transpose (autograd
through the frozen float64 network, smooth units included); and on the piecewise-linear networks
the rows A_x^T e_i and A_x^T w equal torch.func.vjp at x (A_x^T is the transposed Jacobian).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from helpers import check_readings  # noqa: E402
from onnxscope.converters.pytorch import export  # noqa: E402

import onnxscope  # noqa: E402

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")
)
from architectures import torch_models as tm  # noqa: E402

rel, rel_each, one_hot, jvp, vjp = tm.rel, tm.rel_each, tm.one_hot, tm.jvp, tm.vjp

EXACT = 1e-5  # reconstruction, linearity, agreement with torch (relative, float32)

# (architecture, exporter): every architecture through both torch exporters. The dynamo exporter
# writes opset 18 for most of them (it cannot go below 18 and its down-conversion fails), so the
# two exporters also give two opsets and two spellings of the same network.
EXPORTERS = ("legacy", "dynamo")
CASES = [(name, exporter) for exporter in EXPORTERS for name in tm.ARCHITECTURES]

JACOBIAN_MODELS = ["resnet", "leaky_prelu"]  # ReLU/LeakyReLU/PReLU/MaxPool (+ BN, affine) only
PIECEWISE = [n for n, (_, _, piecewise) in tm.ARCHITECTURES.items() if piecewise]

# Known onnxscope bugs, as (test, architecture, exporter) -> reason; those tests stay real checks
# (strict xfail: they fail the run when the bug is fixed, so the mark is removed).
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


def cases(test: str, names=None, exporters=EXPORTERS):
    return tm.parametrized_cases(CASES, KNOWN_BUGS, test, names, exporters)


@dataclasses.dataclass
class Case:
    name: str
    exporter: str
    module: torch.nn.Module
    x: torch.Tensor
    path: str
    _it: onnxscope.Interpretation | None = None

    @property
    def x_np(self) -> np.ndarray:
        return self.x.numpy()

    @property
    def it(self) -> onnxscope.Interpretation:
        if self._it is None:
            self._it = onnxscope.LinearScope(self.path).interpret(self.x_np)
        return self._it

    def forward(self) -> np.ndarray:
        with torch.no_grad():
            return self.module(self.x).numpy()


@pytest.fixture(scope="module")
def export_case(tmp_path_factory):
    """Export each (architecture, exporter[, input]) once per module; interpret lazily."""
    cache: dict[tuple, Case] = {}

    def get(name: str, exporter: str, x: torch.Tensor | None = None, tag: str = "") -> Case:
        key = (name, exporter, tag)
        if key not in cache:
            module, x0 = tm.build(name)
            x = x0 if x is None else x
            path = tmp_path_factory.mktemp(f"{name}-{exporter}{tag}") / f"{name}.onnx"
            export(module, x, path, dynamo=exporter == "dynamo")
            cache[key] = Case(name, exporter, module, x, str(path))
        return cache[key]

    return get


@pytest.fixture(scope="module")
def model_case(export_case):
    return lambda name, exporter: export_case(name, exporter)


# -- every model × exporter ----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "exporter"), cases("reading_graphs"))
def test_reading_graphs_equal_the_python_api(model_case, name, exporter):
    """votes.onnx, rows.onnx, columns.onnx and scope.onnx, one ONNX Runtime run each, equal the
    Python API to 1e-6 (issue 13; tests/helpers.py: check_readings)."""
    check_readings(model_case(name, exporter).it)


@pytest.mark.parametrize(("name", "exporter"), cases("verify"))
def test_verify(model_case, name, exporter):
    errors = model_case(name, exporter).it.verify()
    print(
        f"{name}-{exporter}: reconstruction {errors['reconstruction']:.2e} "
        f"linearity {errors['linearity']:.2e}"
    )
    assert errors["reconstruction"] <= EXACT, errors
    assert errors["linearity"] <= EXACT, errors


@pytest.mark.parametrize(("name", "exporter"), cases("output_torch"))
def test_output_matches_torch(model_case, name, exporter):
    case = model_case(name, exporter)
    tm.assert_matches(case.it.output, case.forward(), 1e-4)


@pytest.mark.parametrize(("name", "exporter"), cases("output_ort"))
def test_mask_graph_outputs_match_plain_model(model_case, name, exporter):
    """The mask graph's model outputs equal a plain ONNX Runtime run of the exported model."""
    case = model_case(name, exporter)
    y = tm.plain_output(case.path, {case.it.scope.wrt: case.x_np})
    # exposing pre-activations can block ORT's fusions: allow float rounding, nothing more
    tm.assert_matches(case.it.output, y, 1e-5)


@pytest.mark.parametrize(("name", "exporter"), cases("reference"))
def test_matches_torch_reference_interpreter(model_case, name, exporter):
    """A_x z and c_x equal the frozen network rebuilt in torch (float64): secant gains, frozen
    gates, frozen 1/σ, MaxPool selections. verify() alone cannot see a consistent-but-wrong A_x."""
    case = model_case(name, exporter)
    z = np.random.default_rng(5).standard_normal((3, *case.x.shape)).astype(np.float32)
    f_ref, az_ref, c_ref, hits = tm.reference_interpreter(case.module, case.x, torch.from_numpy(z))
    assert hits, "the reference froze no unit"
    assert rel(f_ref, case.forward()) <= EXACT  # the reference replays F(x) itself
    got = case.it.apply(z)
    errs = [rel(g, w) for g, w in zip(got, az_ref)]
    bias_err = rel(case.it.bias, c_ref)
    print(
        f"{name}-{exporter}: apply vs reference {max(errs):.2e}, bias vs reference {bias_err:.2e}"
    )
    assert max(errs) <= EXACT, errs
    assert bias_err <= EXACT


# -- the transposed interpreter, every model × exporter ------------------------------------------
@pytest.mark.parametrize(("name", "exporter"), cases("verify_adjoint"))
def test_verify_adjoint(model_case, name, exporter):
    """verify() checks <A z, w> = <z, A^T w> at one random (z, w) through the adjoint graph."""
    errors = model_case(name, exporter).it.verify()
    assert "adjoint" in errors, f"no adjoint check: {errors}"
    print(f"{name}-{exporter}: adjoint {errors['adjoint']:.2e}")
    assert errors["adjoint"] <= EXACT, errors


@pytest.mark.parametrize(("name", "exporter"), cases("adjoint_grid"))
def test_adjoint_identity_over_a_grid(model_case, name, exporter):
    """<A z_i, w_j> = <z_i, A^T w_j> for 5 probes × 19 cotangents (a partial second batch), each
    pair to 1e-5·‖A z_i‖‖w_j‖: one random pair can miss a wrong transpose, a grid rarely does."""
    it = model_case(name, exporter).it
    rng = np.random.default_rng(13)
    z = rng.standard_normal((5, *it.x.shape)).astype(np.float32)
    w = rng.standard_normal((it.batch + 3, *it.output.shape)).astype(np.float32)
    az = it.apply(z).reshape(len(z), -1).astype(np.float64)
    atw = it.apply_T(w)
    assert atw.shape == (len(w), *it.x.shape) and atw.dtype == it.x.dtype
    wf, atwf = w.reshape(len(w), -1).astype(np.float64), atw.reshape(len(w), -1).astype(np.float64)
    lhs = az @ wf.T  # <A z_i, w_j>
    rhs = z.reshape(len(z), -1).astype(np.float64) @ atwf.T  # <z_i, A^T w_j>
    scale = np.outer(np.linalg.norm(az, axis=1), np.linalg.norm(wf, axis=1))
    worst = float(np.max(np.abs(lhs - rhs) / scale))
    print(f"{name}-{exporter}: adjoint grid {worst:.2e}")
    assert worst <= EXACT


@pytest.mark.parametrize(("name", "exporter"), cases("adjoint_reference"))
def test_apply_T_matches_torch_reference_transpose(model_case, name, exporter):
    """A_x^T w equals the transpose of the torch reference interpreter (autograd through the
    frozen float64 network), so smooth units, gates and frozen norms are transposed correctly."""
    case = model_case(name, exporter)
    w = np.random.default_rng(17).standard_normal((3, *case.it.output.shape)).astype(np.float32)
    want = tm.reference_adjoint(case.module, case.x, torch.from_numpy(w)).numpy()
    got = case.it.apply_T(w)
    assert got.shape == want.shape
    tm.assert_each_exact(got, want, f"{name}-{exporter}: apply_T vs reference transpose")


# -- piecewise-linear networks: A_x is the Jacobian at x --------------------------------------
@pytest.mark.parametrize(("name", "exporter"), cases("jvp", JACOBIAN_MODELS + ["unet"]))
def test_apply_equals_jvp(model_case, name, exporter):
    case = model_case(name, exporter)
    k = 2 * case.it.batch + 3  # several probe batches, the last one partial
    z = np.random.default_rng(7).standard_normal((k, *case.x.shape)).astype(np.float32)
    got, want = case.it.apply(z), jvp(case.module, case.x, z)
    assert got.shape == want.shape == (k, *case.it.output.shape)
    errs = [rel(g, w) for g, w in zip(got, want)]
    print(f"{name}-{exporter}: apply vs jvp {max(errs):.2e} over {k} probes")
    assert max(errs) <= EXACT, errs


@pytest.mark.parametrize(("name", "exporter"), cases("columns", JACOBIAN_MODELS))
def test_columns_equal_jvp_one_hot(model_case, name, exporter):
    case = model_case(name, exporter)
    n = case.x.numel()
    idx = np.concatenate([[0, n - 1], np.random.default_rng(11).choice(n, 10, replace=False)])
    got = case.it.columns(idx)
    onehot = np.zeros((len(idx), n), np.float32)
    onehot[np.arange(len(idx)), idx] = 1
    want = jvp(case.module, case.x, onehot.reshape(len(idx), *case.x.shape))
    assert got.shape == want.shape
    assert np.abs(want).max() > 0
    # a column can be (near) zero where the input element reaches no active path: scale by the
    # largest column rather than dividing by a vanishing norm
    scale = np.linalg.norm(want.reshape(len(idx), -1), axis=1).max()
    errs = np.linalg.norm((got - want).reshape(len(idx), -1), axis=1) / scale
    print(f"{name}-{exporter}: columns vs jvp {errs.max():.2e}")
    assert errs.max() <= EXACT, errs


@pytest.mark.parametrize(("name", "exporter"), cases("rows", PIECEWISE))
def test_rows_equal_vjp_one_hot(model_case, name, exporter):
    """Row i of A_x is the gradient of output i at x: A_x^T e_i = vjp(F, x)(e_i)."""
    case = model_case(name, exporter)
    out_shape = case.it.output.shape
    n = int(np.prod(out_shape))
    rest = np.random.default_rng(19).choice(np.arange(1, n - 1), min(8, n - 2), replace=False)
    idx = np.concatenate([[0, n - 1], rest])
    got = case.it.rows(idx)
    want = vjp(case.module, case.x, one_hot(idx, out_shape))
    assert got.shape == want.shape == (len(idx), *case.x.shape)
    assert got.dtype == case.x_np.dtype
    # every output here reads some input: no row is (near) zero, so each is compared on its own
    norms = np.linalg.norm(want.reshape(len(idx), -1), axis=1)
    assert norms.min() > 1e-3 * norms.max(), norms
    tm.assert_each_exact(got, want, f"{name}-{exporter}: rows vs vjp")
    # a negative index counts from the end, as in numpy
    np.testing.assert_array_equal(case.it.rows([-1])[0], got[1])


@pytest.mark.parametrize(("name", "exporter"), cases("votes", ["resnet", "leaky_prelu"]))
def test_votes_and_bias_reproduce_each_logit(model_case, name, exporter):
    """For the classifiers: votes x ⊙ (x-gradient of logit k) sum with c_k to logit k, and the
    votes equal x times torch's gradient."""
    case = model_case(name, exporter)
    logits, bias = case.it.output.ravel(), case.it.bias.ravel()
    for k in range(len(logits)):
        votes = case.it.votes(k)
        grad = vjp(case.module, case.x, one_hot([k], case.it.output.shape))[0]
        np.testing.assert_allclose(votes, case.x_np * grad, rtol=1e-4, atol=1e-6)
        total = float(votes.sum(dtype=np.float64)) + float(bias[k])
        scale = float(np.abs(logits).max())
        assert total == pytest.approx(float(logits[k]), rel=1e-5, abs=1e-5 * scale)


@pytest.mark.parametrize(("name", "exporter"), cases("apply_T", PIECEWISE))
def test_apply_T_equals_vjp(model_case, name, exporter):
    """A_x^T w = vjp(F, x)(w) for random cotangents with leading dims (5, 7): 35 cotangents, so
    two full probe batches of 16 and a partial one of 3."""
    case = model_case(name, exporter)
    lead = (5, 7)
    assert np.prod(lead) % case.it.batch != 0
    w = np.random.default_rng(23).standard_normal((*lead, *case.it.output.shape))
    w = w.astype(np.float32)
    got = case.it.apply_T(w)
    assert got.shape == (*lead, *case.x.shape)
    want = vjp(case.module, case.x, w.reshape(-1, *case.it.output.shape))
    tm.assert_each_exact(got.reshape(want.shape), want, f"{name}-{exporter}: apply_T vs vjp")


@pytest.mark.parametrize(("name", "exporter"), cases("batch2", JACOBIAN_MODELS + ["unet"]))
def test_batch_of_two_equals_jvp(export_case, name, exporter):
    """N = 2: MaxPool selections index the flattened N·C·H·W tensor; samples must not mix."""
    shape = (2, *tm.ARCHITECTURES[name][1][1:])
    case = export_case(name, exporter, x=tm.make_input(shape, seed=99), tag="-n2")
    errors = case.it.verify()
    assert errors["reconstruction"] <= EXACT and errors["linearity"] <= EXACT, errors
    z = np.random.default_rng(3).standard_normal((4, *shape)).astype(np.float32)
    errs = [rel(g, w) for g, w in zip(case.it.apply(z), jvp(case.module, case.x, z))]
    assert max(errs) <= EXACT, errs
    # a probe confined to sample 0 leaves sample 1's output untouched
    z0 = np.zeros_like(z[:1])
    z0[:, 0] = z[:1, 0]
    assert np.all(case.it.apply(z0)[:, 1] == 0)
    # the adjoint graph too: its MaxPool scatter must send each sample's cotangent to that sample
    assert errors["adjoint"] <= EXACT, errors
    w = np.random.default_rng(6).standard_normal((3, *case.it.output.shape)).astype(np.float32)
    errs = rel_each(case.it.apply_T(w), vjp(case.module, case.x, w))
    assert errs.max() <= EXACT, errs
    w0 = np.zeros_like(w[:1])
    w0[:, 0] = w[:1, 0]
    assert np.all(case.it.apply_T(w0)[:, 1] == 0)


@pytest.mark.parametrize(("name", "exporter"), cases("flat", JACOBIAN_MODELS, ("legacy",)))
def test_flat_image_ties_follow_torch(export_case, name, exporter):
    """A flat image (a saturated sky) makes MaxPool windows tie between different pixels; ONNX
    Runtime and torch both take the first maximum, and so must the frozen selection."""
    _, x = tm.build(name)
    flat = torch.tensor([0.8, -0.3, 0.5]).view(1, 3, 1, 1).expand_as(x).clone()
    flat[..., 8:14, 8:14] = x[..., 8:14, 8:14]
    case = export_case(name, exporter, x=flat, tag="-flat")
    errors = case.it.verify()
    assert errors["reconstruction"] <= EXACT and errors["linearity"] <= EXACT, errors
    z = np.random.default_rng(4).standard_normal((4, *x.shape)).astype(np.float32)
    errs = [rel(g, w) for g, w in zip(case.it.apply(z), jvp(case.module, case.x, z))]
    assert max(errs) <= EXACT, errs
    # the adjoint scatters each pooled cotangent back to the same (first) maximum
    assert errors["adjoint"] <= EXACT, errors
    w = np.random.default_rng(8).standard_normal((4, *case.it.output.shape)).astype(np.float32)
    errs = rel_each(case.it.apply_T(w), vjp(case.module, case.x, w))
    assert errs.max() <= EXACT, errs


@pytest.mark.parametrize(("name", "exporter"), cases("bias", ["resnet"]))
def test_bias_consistent_with_output(model_case, name, exporter):
    """c_x is computed by onnxscope as the affine twin at z = 0; it must match F(x) − A_x x."""
    case = model_case(name, exporter)
    it = case.it
    c = it.bias
    residual = case.forward().astype(np.float64) - it.apply(case.x_np[None])[0].astype(np.float64)
    assert np.linalg.norm(c) > 1e-2 * np.linalg.norm(it.output)  # BN / biases: c_x is not trivial
    err = rel(c, residual)
    print(f"{name}-{exporter}: bias vs F - Ax {err:.2e}")
    assert err <= 1e-4


# -- secant precision of a unit with f(0) ≠ 0 (no cancellation in σ(u) − ½) -------------------
def test_sigmoid_head_secant_gain_is_exact(tmp_path):
    module = tm.SigmoidHead().eval()
    x = tm.small_logits_input()
    path = export(module, x, tmp_path / "sigmoid_head.onnx")
    it = onnxscope.LinearScope(path).interpret(x.numpy())
    errors = it.verify()
    assert errors["reconstruction"] <= EXACT and errors["linearity"] <= EXACT, errors
    # A_x is diagonal here, so A_x 1 is the vector of secant gains (σ(u) − ½)/u at u = x
    _, az_ref, _, hits = tm.reference_interpreter(module, x, torch.ones_like(x)[None])
    assert hits == {"sigmoid": 1}
    gains = it.apply(np.ones_like(x.numpy())[None])[0]
    exact = az_ref[0].numpy()
    worst = float(np.max(np.abs(gains - exact) / np.abs(exact)))
    print(f"sigmoid head: worst relative secant-gain error {worst:.2e}")
    assert worst <= EXACT


# -- guards on the test models themselves ------------------------------------------------------
def test_registry_covers_the_brief():
    assert {
        "resnet",
        "mobilenetv3",
        "unet",
        "cyclegan",
        "convnext",
        "leaky_prelu",
        "efficientnet",
    } <= set(tm.ARCHITECTURES)


@pytest.mark.parametrize("name", PIECEWISE)
def test_piecewise_models_have_no_smooth_units(name):
    """Guard the choice of Jacobian models: only piecewise-linear units in them."""
    module, _ = tm.build(name)
    assert not [m for m in module.modules() if isinstance(m, tm.SMOOTH_MODULES)]


@pytest.mark.parametrize("name", PIECEWISE)
def test_reference_interpreter_is_the_jacobian_on_piecewise_models(name):
    """The torch reference used above is itself checked: on ReLU-type nets it is the Jacobian."""
    module, x = tm.build(name)
    z = np.random.default_rng(9).standard_normal((2, *x.shape)).astype(np.float32)
    f, az, c, _ = tm.reference_interpreter(module, x, torch.from_numpy(z))
    for a, j in zip(az.numpy(), jvp(module, x, z)):
        assert rel(a, j) <= EXACT
    # and it is exactly affine: F̂(x) = A x + c in float64
    _, ax, _, _ = tm.reference_interpreter(module, x, x[None])
    assert rel(ax[0] + c, f) <= 1e-12
    # and its transpose (used for the smooth models above) is the vector-Jacobian product here
    w = np.random.default_rng(10).standard_normal((2, *f.shape)).astype(np.float32)
    atw = tm.reference_adjoint(module, x, torch.from_numpy(w)).numpy()
    assert rel_each(atw, vjp(module, x, w)).max() <= EXACT


def test_reference_adjoint_is_the_transpose_of_the_reference():
    """<A z, w> = <z, A^T w> for the torch reference itself, on a model with smooth units, gates
    and frozen norms (so the reference transpose is not just checked where it is a vjp)."""
    for name in ("mobilenetv3", "cyclegan", "convnext", "efficientnet"):
        module, x = tm.build(name)
        rng = np.random.default_rng(12)
        z = torch.from_numpy(rng.standard_normal((3, *x.shape)))
        _, az, _, _ = tm.reference_interpreter(module, x, z)
        w = torch.from_numpy(rng.standard_normal((3, *az.shape[1:])))
        atw = tm.reference_adjoint(module, x, w)
        lhs = az.flatten(1) @ w.flatten(1).T
        rhs = z.flatten(1) @ atw.flatten(1).T
        assert rel(lhs.numpy(), rhs.numpy()) <= 1e-12, name
