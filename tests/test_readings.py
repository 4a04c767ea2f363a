"""Readings of the transposed interpreter: votes, bias share, the LinearOperator, the spectrum and
the bias split by layer, each against a dense A_x assembled from columns."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import make_model

import onnxscope

RNG = np.random.default_rng(7)
F32 = np.float32


def w(*shape):
    return (RNG.standard_normal(shape) * 0.5).astype(F32)


@pytest.fixture(scope="module")
def classifier():
    """Conv+bias, PRelu, BatchNorm, max pool, Clip, Gemm with bias, LeakyRelu: a small
    classifier with biases and intercepts in several kinds of nodes."""
    model = make_model(
        [
            "c = Conv <pads=[1,1,1,1]> (x, W, B)",
            "p = PRelu(c, slope)",
            "n = BatchNormalization(p, s, bb, mean, var)",
            "m = MaxPool <kernel_shape=[2,2], strides=[2,2]> (n)",
            "k = Clip(m, lo, hi)",
            "f = Flatten(k)",
            "g = Gemm <transB=1> (f, G, gb)",
            "y = LeakyRelu <alpha=0.1> (g)",
        ],
        {"x": (1, 2, 6, 6)},
        inits={
            "W": w(3, 2, 3, 3),
            "B": w(3),
            "slope": w(3, 1, 1),
            "s": w(3) + 1,
            "bb": w(3),
            "mean": w(3),
            "var": np.abs(w(3)) + 0.5,
            "lo": np.asarray(-0.8, F32),
            "hi": np.asarray(0.9, F32),
            "G": w(5, 27),
            "gb": w(5),
        },
    )
    x = RNG.standard_normal((1, 2, 6, 6)).astype(F32)
    it = onnxscope.LinearScope(model, probe_batch=7).interpret(x)
    dense = it.columns(range(x.size)).reshape(x.size, -1).T  # [outputs, inputs]
    return model, x, it, dense.astype(np.float64)


def test_rows_and_apply_T_match_the_dense_transpose(classifier):
    _, x, it, dense = classifier
    rows = it.rows(range(dense.shape[0])).reshape(dense.shape[0], -1)
    np.testing.assert_allclose(rows, dense, rtol=1e-5, atol=1e-6)
    wts = RNG.standard_normal((9, *it.output.shape)).astype(F32)
    atw = it.apply_T(wts).reshape(9, -1)
    np.testing.assert_allclose(atw, wts.reshape(9, -1) @ dense, rtol=1e-4, atol=1e-5)


def test_votes_plus_bias_reproduce_each_logit(classifier):
    _, x, it, _ = classifier
    for k in range(it.output.size):
        votes = it.votes(k)
        assert votes.shape == x.shape
        np.testing.assert_allclose(
            votes.sum() + it.bias.ravel()[k], it.output.ravel()[k], rtol=1e-5, atol=1e-6
        )
        share = it.bias_share(k)
        assert 0 <= share["share"] <= 1
        assert share["votes"] + share["bias"] == pytest.approx(share["output"], rel=1e-5, abs=1e-6)
        if share["bias"] or share["votes"]:
            expected = abs(share["bias"]) / (abs(share["votes"]) + abs(share["bias"]))
            assert share["share"] == pytest.approx(expected)


def test_bias_by_layer_sums_to_the_bias_image(classifier):
    _, _, it, _ = classifier
    parts = it.bias_by_layer()
    # the Conv bias, BatchNorm shift, Clip intercepts and Gemm bias each add a constant
    assert {"c", "n", "g"} <= set(parts), list(parts)
    total = sum(parts.values())
    np.testing.assert_allclose(total, it.bias, rtol=1e-5, atol=1e-6)
    assert all(p.shape == it.output.shape for p in parts.values())


def test_linear_operator_is_A_and_its_transpose(classifier):
    _, _, it, dense = classifier
    op = it.as_linear_operator()
    assert op.shape == dense.shape
    v = RNG.standard_normal(dense.shape[1])
    u = RNG.standard_normal(dense.shape[0])
    np.testing.assert_allclose(op.matvec(v), dense @ v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(op.rmatvec(u), dense.T @ u, rtol=1e-4, atol=1e-5)
    block = RNG.standard_normal((dense.shape[1], 3))
    np.testing.assert_allclose(op.matmat(block), dense @ block, rtol=1e-4, atol=1e-5)


def test_svd_matches_a_dense_svd(classifier):
    _, _, it, dense = classifier
    u, s, vt = it.svd(4)
    assert u.shape == (4, *it.output.shape) and vt.shape == (4, *it.x.shape)
    np.testing.assert_allclose(s, np.linalg.svd(dense, compute_uv=False)[:4], rtol=1e-5)
    # the singular vectors are singular vectors of A: A v = s u
    flat_u, flat_v = u.reshape(4, -1).T, vt.reshape(4, -1)
    np.testing.assert_allclose(dense @ flat_v.T, flat_u * s, rtol=1e-4, atol=1e-5)


def test_svd_matrix_free_path_and_crops():
    """The ARPACK path (forced) and a crop of input and output on an image-to-image model."""
    from onnxscope.runtime.spectrum import svd

    model = make_model(
        ["c = Conv <pads=[1,1,1,1]> (x, W)", "r = Relu(c)", "y = Conv <pads=[1,1,1,1]> (r, V)"],
        {"x": (1, 1, 10, 10)},
        inits={"W": w(4, 1, 3, 3), "V": w(1, 4, 3, 3)},
    )
    x = RNG.standard_normal((1, 1, 10, 10)).astype(F32)
    it = onnxscope.LinearScope(model).interpret(x)
    dense = it.columns(range(100)).reshape(100, 100).T.astype(np.float64)
    _, s, _ = svd(it, 5, assemble_below=10)
    np.testing.assert_allclose(s, np.linalg.svd(dense, compute_uv=False)[:5], rtol=1e-4)
    crop = (0, 0, slice(2, 7), slice(3, 8))
    u, s_crop, vt = it.svd(3, input_region=crop, output_region=crop)
    idx = np.arange(100).reshape(10, 10)[2:7, 3:8].ravel()
    sub = dense[np.ix_(idx, idx)]
    np.testing.assert_allclose(s_crop, np.linalg.svd(sub, compute_uv=False)[:3], rtol=1e-5)
    assert vt.shape == u.shape == (3, 1, 1, 5, 5)
    # an input crop only: the 25 input pixels against the whole 10x10 output
    _, s_in, vt = it.svd(2, input_region=crop)
    full = dense[:, idx]
    np.testing.assert_allclose(s_in, np.linalg.svd(full, compute_uv=False)[:2], rtol=1e-5)


def test_svd_of_a_classifier_assembles_rows_never_an_identity_over_the_input(classifier):
    """Few outputs, many inputs: the matrix comes from its rows (K adjoint probes); the linear
    graph is not run on an identity over the input (that was 169 GiB at 224²)."""
    _, _, it, dense = classifier
    calls = {"apply_all": 0, "apply_T_all": 0}
    for name in calls:
        original = getattr(it, name)

        def counted(value, _original=original, _name=name):
            arrays = value.values() if isinstance(value, dict) else [value]
            calls[_name] += max(len(np.asarray(a)) for a in arrays)
            return _original(value)

        setattr(it, name, counted)
    u, s, vt = it.svd(2)
    assert calls["apply_all"] == 0 and calls["apply_T_all"] == dense.shape[0]
    np.testing.assert_allclose(s, np.linalg.svd(dense, compute_uv=False)[:2], rtol=1e-5)
    # the input region alone (the old `region` also cropped the output and failed)
    n = it.x.shape
    crop = (slice(None), slice(None), slice(0, 2), slice(1, 3))
    _, s_crop, vt = it.svd(1, input_region=crop)
    assert vt.shape == (1, n[0], n[1], 2, 2)


def test_cli_rows_and_votes(classifier, tmp_path):
    model, x, it, dense = classifier
    import onnx

    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", x)
    run = lambda *a: subprocess.run(  # noqa: E731
        [
            sys.executable,
            "-m",
            "onnxscope",
            *a,
            str(tmp_path / "m.onnx"),
            "--input",
            f"x={tmp_path / 'x.npy'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    proc = run("rows", "--index", "0", "--index", "3", "-o", str(tmp_path / "rows.npy"))
    assert proc.returncode == 0, proc.stderr
    rows = np.load(tmp_path / "rows.npy")
    np.testing.assert_allclose(rows.reshape(2, -1), dense[[0, 3]], rtol=1e-5, atol=1e-6)
    proc = run("votes", "--class", "2", "-o", str(tmp_path / "votes.npy"))
    assert proc.returncode == 0, proc.stderr
    assert "bias share" in proc.stdout
    np.testing.assert_allclose(np.load(tmp_path / "votes.npy")[0], it.votes(2), rtol=1e-5)
    proc = run("verify", "--json")
    assert json.loads(proc.stdout)["adjoint"] <= 1e-5


def test_a_saturated_unit_is_frozen_whole():
    """A saturated Sigmoid (u in [-25, -15], as PP-OCR's head on a page without text): the secant
    from (0, 1/2) would put -1/2 in A_x x and +1/2 in c_x for F ~ 1e-9, and float32 would lose
    every digit of F. There the unit is frozen whole: A_x x = 0, c_x = F(x), and reconstruction
    is measured against ‖F(x)‖ itself."""
    model = make_model(["y = Sigmoid(x)"], {"x": (1, 1, 8, 8)})
    x = (-15.0 - 10.0 * RNG.random((1, 1, 8, 8))).astype(F32)
    it = onnxscope.LinearScope(model).interpret(x)
    errors = it.verify()
    assert errors.ok and errors["reconstruction"] <= 1e-6, errors.as_dict()
    assert errors.conditioning == pytest.approx(1.0)
    assert np.all(it.apply(x) == 0) and np.array_equal(it.bias, it.output)
