"""Batched interpretation: `interpret(X)` with N samples reads every sample on its own.

A batch's readings (votes and bias share of a target per sample, rows and columns at per-sample
positions, verify per sample, outputs and biases) must equal the results of interpreting each
sample alone, to 1e-6: on a ReLU classifier, an SE/SiLU classifier and an image-to-image net, each
exported by torch's two exporters and by Keras (tf2onnx) with a free batch axis, and on models
exported at batch 1 (read one sample at a time behind the same API). Readings that cannot be
meant per sample are refused, and a model whose batch axis mixes its samples is refused too.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_model

import onnxscope
from onnxscope.errors import InputError

N = 3
TOL = 1e-6


def close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    scale = max(float(np.linalg.norm(b)), 1e-30)
    assert float(np.linalg.norm(a - b)) <= TOL * scale, (what, np.abs(a - b).max())


def assert_batch_equals_samples(scope: onnxscope.LinearScope, X: np.ndarray) -> None:
    it = scope.interpret(X)
    assert it.samples == N
    singles = [scope.interpret(X[n : n + 1]) for n in range(N)]
    name = it._single_name()
    per_sample = int(np.prod(it.outputs[name].shape[1:]))
    in_sample = int(np.prod(X.shape[1:]))
    rng = np.random.default_rng(5)
    targets = [int(t) for t in rng.integers(0, per_sample, N)]
    positions = rng.integers(0, per_sample, (2, N))
    pixels = rng.integers(0, in_sample, (2, N))
    for n, one in enumerate(singles):
        close(it.outputs[name][n], one.outputs[name][0], "output")
        close(it.biases[name][n], one.biases[name][0], "bias")
    votes = it.votes(targets)
    shares = it.bias_share(targets)
    rows, columns = it.rows(positions), it.columns(pixels)
    same_rows = it.rows([int(positions[0, 0])])  # the same position in every sample
    for n, one in enumerate(singles):
        close(votes[n], one.votes(targets[n])[0], "votes")
        ref = one.bias_share(targets[n])
        for key in ("share", "votes", "bias", "output"):
            assert abs(shares[key][n] - ref[key]) <= TOL * max(1.0, abs(ref[key])), key
        for k in range(2):
            close(rows[k, n], one.rows(int(positions[k, n]))[0, 0], "row")
            close(columns[k, n], one.columns(int(pixels[k, n]))[0, 0], "column")
        close(same_rows[0, n], one.rows(int(positions[0, 0]))[0, 0], "row shared")
    top = it.votes("top")
    for n, one in enumerate(singles):
        close(top[n], one.votes(int(np.argmax(one.outputs[name])))[0], "top votes")
    v = it.verify()
    assert v.ok and len(v.per_sample) == N and v.failed_samples() == []
    for n, one in enumerate(singles):
        assert one.verify().ok
        assert set(v.per_sample[n]) == set(one.verify())


# -- the subjects --------------------------------------------------------------------------------
TORCH_SUBJECTS = ("resnet", "efficientnet", "unet")  # ReLU, SE/SiLU, image to image


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    pytest.importorskip("torch")
    from onnxscope.converters.pytorch import export

    from samples.architectures.torch_models import build

    made = {}

    def get(name: str, dynamo: bool, free_batch: bool = True) -> str:
        key = (name, dynamo, free_batch)
        if key not in made:
            module, x = build(name)
            path = tmp_path_factory.mktemp("batched") / f"{name}_{dynamo}_{free_batch}.onnx"
            export(module, x, path, dynamo=dynamo, free_batch=free_batch)
            made[key] = str(path)
        return made[key]

    return get


def _batch(shape, seed=7):
    return np.random.default_rng(seed).standard_normal((N, *shape[1:])).astype(np.float32)


@pytest.mark.parametrize("name", TORCH_SUBJECTS)
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_torch_free_batch(torch_models, name, dynamo):
    from samples.architectures.torch_models import ARCHITECTURES

    scope = onnxscope.LinearScope(torch_models(name, dynamo))
    dims = scope._input_specs[scope.wrt][0]
    assert not isinstance(dims[0], int) or dims[0] <= 0, f"batch axis not free: {dims}"
    assert_batch_equals_samples(scope, _batch(ARCHITECTURES[name][1]))


@pytest.mark.parametrize("name", ["resnet", "unet"])
def test_torch_fixed_batch_is_read_one_sample_at_a_time(torch_models, name):
    from samples.architectures.torch_models import ARCHITECTURES

    scope = onnxscope.LinearScope(torch_models(name, False, free_batch=False))
    assert scope._input_specs[scope.wrt][0][0] == 1
    X = _batch(ARCHITECTURES[name][1])
    it = scope.interpret(X)
    assert type(it).__name__ == "SampleLoop"
    assert_batch_equals_samples(scope, X)


KERAS_SUBJECTS = ("resnet", "efficientnet", "unet")


@pytest.mark.parametrize("name", KERAS_SUBJECTS)
def test_keras_free_batch(tmp_path, name):
    pytest.importorskip("tensorflow")
    import keras
    import keras_zoo
    from onnxscope.converters import tensorflow as tfc

    arch = keras_zoo.ARCHITECTURES[name]
    keras.utils.set_random_seed(keras_zoo.SEED)
    inp = keras.Input(arch.shape[1:], name="image")  # batch left free
    model = keras_zoo.randomize(keras.Model(inp, arch.fn(inp), name=name))
    path = tmp_path / f"{name}.onnx"
    tfc.from_keras(model, path, nchw=True, free_batch=True)
    scope = onnxscope.LinearScope(str(path))
    assert scope._declared_batch() == "free"
    h, w, c = arch.shape[1:]
    assert_batch_equals_samples(scope, _batch((1, c, h, w)))


def test_bundled_fixed_batch_model():
    """tinynet.onnx (batch fixed at 1; BatchNorm, SE gate, HardSwish): per sample as well."""
    scope = onnxscope.LinearScope("samples/00_default/tinynet.onnx")
    assert_batch_equals_samples(scope, _batch((1, 3, 64, 64)))


# -- what is refused -----------------------------------------------------------------------------
def _classifier(batch="N"):
    rng = np.random.default_rng(0)
    inits = {
        "W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "B": rng.standard_normal(4).astype(np.float32),
        "G": rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32),
    }
    nodes = ["u = Conv (x, W, B)", "r = Relu(u)", "f = Flatten(r)", "y = Gemm<transB=1>(f, G)"]
    return make_model(nodes, inputs={"x": (batch, 3, 8, 8)}, inits=inits)


def test_a_flat_index_over_the_batch_is_refused():
    it = onnxscope.LinearScope(_classifier()).interpret(_batch((1, 3, 8, 8)))
    with pytest.raises(InputError, match="out of range for 5 elements per sample"):
        it.votes(7)  # the old reading: flat index 7 = sample 1's class 2
    with pytest.raises(InputError, match=r"\(2,\) targets for 3 samples"):
        it.votes([1, 2])
    with pytest.raises(InputError, match="positions shaped"):
        it.rows(np.zeros((2, 2), np.int64))
    with pytest.raises(InputError, match="must be integers"):
        it.votes(1.5)


def test_targets_by_label_and_stacks():
    scope = onnxscope.LinearScope(_classifier(), labels=list("abcde"))
    it = scope.interpret(_batch((1, 3, 8, 8)))
    close(it.votes("c"), it.votes(2), "label")
    stack = it.votes([[0, 1, 2], [3, 3, 3]])
    assert stack.shape == (2, N, 3, 8, 8)
    close(stack[1], it.votes(3), "stacked")
    one = scope.interpret(_batch((1, 3, 8, 8))[:1])
    assert one.votes([1, 4]).shape == (2, 1, 3, 8, 8)  # at batch 1: a stack of targets
    assert isinstance(one.bias_share(1)["share"], float)
    with pytest.raises(InputError, match="unknown label 'z'"):
        it.votes("z")


def test_a_model_that_mixes_its_samples_is_refused_and_fails_verify():
    """x - mean over the batch: every sample's output depends on the others."""
    rng = np.random.default_rng(0)
    nodes = [
        "m = ReduceMean<axes=[0], keepdims=1>(x)",
        "d = Sub(x, m)",
        "r = Relu(d)",
        "f = Flatten(r)",
        "y = Gemm<transB=1>(f, G)",
    ]
    G = rng.standard_normal((5, 12)).astype(np.float32)
    model = make_model(nodes, inputs={"x": ("N", 3, 2, 2)}, inits={"G": G})
    it = onnxscope.LinearScope(model).interpret(_batch((1, 3, 2, 2)))
    v = it.verify()
    assert not v.ok and v.failed_samples() == [0, 1, 2]
    with pytest.raises(InputError, match="mixes the samples"):
        it.votes(0)
    # read as one input, the same model is exact
    whole = onnxscope.LinearScope(model, batch_axis=None).interpret(_batch((1, 3, 2, 2)))
    assert whole.samples is None and whole.verify().ok
    assert whole.votes(7).shape == (N, 3, 2, 2)


def test_verify_measuring_floors_only_where_needed_gives_the_same_verdicts():
    it = onnxscope.LinearScope(_classifier()).interpret(_batch((1, 3, 8, 8)))
    full, quick = it.verify(), it.verify(noise="needed")
    assert dict(full) == dict(quick) and full.ok == quick.ok
    assert np.isnan(quick.noise["reconstruction"]) and quick.bound("reconstruction") == quick.tol
    assert [dict(v) for v in full.per_sample] == [dict(v) for v in quick.per_sample]


def test_cli_votes_on_a_batch_reads_each_sample(tmp_path, capsys):
    """The symptom of the issue: `votes --input x=batch2.npy` read flat index 17 as a class."""
    import onnx

    from onnxscope.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(_classifier(), model)
    X = _batch((1, 3, 8, 8))[:2]
    np.save(tmp_path / "batch2.npy", X)
    out = tmp_path / "v.npy"
    assert (
        main(["votes", str(model), "--input", f"x={tmp_path / 'batch2.npy'}", "-o", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    it = onnxscope.LinearScope(str(model)).interpret(X)
    tops = np.argmax(it.output, axis=1)
    for n in range(2):
        assert f"{n}       {tops[n]}" in printed  # the sample and its own top class
    close(np.load(out)[0], it.votes("top"), "saved maps")
    for n in range(2):
        single = onnxscope.LinearScope(str(model)).interpret(X[n : n + 1])
        close(np.load(out)[0, n], single.votes(int(tops[n]))[0], "per sample")
