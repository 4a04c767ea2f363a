"""`onnxscope triton`: the Triton model repository of a ReLU net and of a multi-output model, its
server-less check (and that the check catches tampered configs and models), the readings' graphs
as Triton would run them against the Python API, the atomic write, and the CLI end to end."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2")

from google.protobuf import text_format  # noqa: E402  (after the skip: comes with tritonclient)
from helpers import assert_outputs_equal, make_model  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402

from onnxscope import LinearScope  # noqa: E402
from onnxscope.cli import main  # noqa: E402
from onnxscope.files.outputs import OutputError  # noqa: E402
from onnxscope.serve.models import load  # noqa: E402
from onnxscope.serve.triton import INDEX, check_repository, write_repository  # noqa: E402

READINGS = ["columns", "rows", "scope", "votes"]
RNG = np.random.default_rng(13)


def _weights(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def relu_net() -> onnx.ModelProto:
    """Conv -> ReLU -> MaxPool -> Gemm: a small classifier, x [1, 2, 6, 6] -> y [1, 4]."""
    return make_model(
        [
            "c = Conv <pads=[1, 1, 1, 1]> (x, wc, bc)",
            "r = Relu(c)",
            "p = MaxPool <kernel_shape=[2, 2], strides=[2, 2]> (r)",
            "f = Flatten(p)",
            "y = Gemm <transB=1> (f, wg, bg)",
        ],
        {"x": (1, 2, 6, 6)},
        inits={
            "wc": _weights(3, 2, 3, 3),
            "bc": _weights(3),
            "wg": _weights(4, 27),
            "bg": _weights(4),
        },
    )


def multi_output() -> onnx.ModelProto:
    """x [1, 5] -> logits [1, 3] and a second head `aux` [1, 2] (ReLU and Sigmoid gates)."""
    return make_model(
        [
            "h = Gemm <transB=1> (x, w1, b1)",
            "r = Relu(h)",
            "logits = Gemm <transB=1> (r, w2, b2)",
            "g = Sigmoid(h)",
            "m = Mul(g, h)",
            "aux = Gemm <transB=1> (m, w3)",
        ],
        {"x": (1, 5)},
        outputs=["logits", "aux"],
        inits={
            "w1": _weights(6, 5),
            "b1": _weights(6),
            "w2": _weights(3, 6),
            "b2": _weights(3),
            "w3": _weights(2, 6),
        },
    )


MODELS = {"relu": (relu_net, None), "multi": (multi_output, "aux")}  # name -> (model, read output)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, (build, _) in MODELS.items():
        paths[name] = str(folder / f"{name}.onnx")
        onnx.save(build(), paths[name])
    return paths


@pytest.fixture(scope="module")
def repos(model_files, tmp_path_factory):
    """One repository per model (its readings reading MODELS' output), as written by the API."""
    out = {}
    for name, path in model_files.items():
        repo = tmp_path_factory.mktemp("repos") / name
        served = load(path, name, output=MODELS[name][1])
        write_repository(served, repo, sources={name: path})
        out[name] = repo
    return out


def tampered(repo, tmp_path):
    """A fresh copy of a repository to tamper with."""
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    return copy


def read_config(path) -> pb.ModelConfig:
    return text_format.Parse(open(path).read(), pb.ModelConfig())


def write_config(path, config) -> None:
    with open(path, "w") as f:
        f.write(text_format.MessageToString(config))


# -- the repository and its check --------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_repository_layout_and_configs_pass_the_check(repos, name):
    repo = repos[name]
    assert sorted(os.listdir(repo)) == sorted([INDEX, name, *(f"{name}.{r}" for r in READINGS)])
    for model in [name, *(f"{name}.{r}" for r in READINGS)]:
        config = read_config(repo / model / "config.pbtxt")
        assert (config.name, config.platform, config.max_batch_size) == (
            model,
            "onnxruntime_onnx",
            0,
        )
        assert [(g.count, g.kind) for g in config.instance_group] == [
            (1, pb.ModelInstanceGroup.KIND_CPU)
        ]
        assert sorted(os.listdir(repo / model / "1")) == ["model.onnx"]
        graph = onnx.load(repo / model / "1" / "model.onnx").graph
        assert {t.name for t in config.output} <= {o.name for o in graph.output}
    scope = read_config(repo / f"{name}.scope" / "config.pbtxt")
    probes = [t for t in scope.input if t.optional]
    n_outputs = len(read_config(repo / name / "config.pbtxt").output)
    assert len(probes) == 1 + n_outputs  # z, and a w for each output
    assert all(t.dims[0] == -1 for t in probes)
    votes = read_config(repo / f"{name}.votes" / "config.pbtxt")
    classes = next(t for t in votes.input if t.name == "classes")
    assert (classes.data_type, list(classes.dims)) == (pb.TYPE_INT64, [-1])
    check = check_repository(repo)
    assert check.ok, [str(p) for p in check.problems]
    assert sorted(check.models) == sorted(e for e in os.listdir(repo) if e != INDEX)
    assert check.runs == 1 + len(READINGS) + 1  # scope runs twice: probes omitted, then given
    index = json.loads((repo / INDEX).read_text())
    assert index["models"][f"{name}.votes"]["reading"] == "votes"
    assert index["models"][name]["source"].endswith(f"{name}.onnx")


def _run(repo, model, feeds) -> dict:
    session = ort.InferenceSession(
        str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


@pytest.mark.parametrize("name", MODELS)
def test_each_reading_in_the_repository_equals_the_python_api(model_files, repos, name):
    repo, read = repos[name], MODELS[name][1]
    scope = LinearScope(model_files[name])
    x = RNG.standard_normal(scope.analyze({}).input_shapes["x"]).astype(np.float32)
    it = scope.interpret(x)
    out = read or next(iter(it.outputs))
    n_out, n_in = it.outputs[out].size, x.size
    plain = _run(repo, name, {"x": x})
    assert_outputs_equal(plain, it.outputs, what="plain: ")

    classes = np.array([n_out - 1, 0, -1], np.int64)  # negative: from the end, as in the API
    got = _run(repo, f"{name}.votes", {"x": x, "classes": classes})
    want_votes = np.stack([it.votes(int(k), out) for k in classes])
    assert_outputs_equal(
        {"votes": got["votes"], "bias": got["bias"]},
        {"votes": want_votes, "bias": it.biases[out].ravel()[classes]},
        what="votes: ",
    )
    rows = np.array([0, n_out - 1], np.int64)
    got = _run(repo, f"{name}.rows", {"x": x, "indices": rows})
    assert_outputs_equal({"rows": got["rows"]}, {"rows": it.rows(rows, out)}, what="rows: ")
    cols = np.array([1, n_in - 1, 3], np.int64)
    got = _run(repo, f"{name}.columns", {"x": x, "indices": cols})
    want = it.columns(cols)
    want = want[out] if isinstance(want, dict) else want
    assert_outputs_equal({"columns": got["columns"]}, {"columns": want}, what="columns: ")

    arts = scope.artifacts({})
    z = RNG.standard_normal((4, *x.shape)).astype(np.float32)
    ws = {o: RNG.standard_normal((3, *v.shape)).astype(np.float32) for o, v in it.outputs.items()}
    probes = {f"linear/{arts.probe}": z}
    probes.update({f"adjoint/{arts.adjoint_probes[o]}": w for o, w in ws.items()})
    got = _run(repo, f"{name}.scope", {"x": x, **probes})
    want = {f"linear/{o}": v for o, v in it.apply_all(z).items()}
    want.update({f"bias/{o}": v.reshape(got[f"bias/{o}"].shape) for o, v in it.biases.items()})
    want[f"adjoint/{scope.wrt}"] = it.apply_T_all(ws)
    want.update(it.outputs)
    assert_outputs_equal(got, want, what="scope: ")
    # the probes omitted: F(x) and c_x alone, the probe answers empty
    bare = _run(repo, f"{name}.scope", {"x": x})
    assert bare[f"linear/{out}"].shape[0] == 0 and bare[f"adjoint/{scope.wrt}"].shape[0] == 0
    assert_outputs_equal({o: bare[o] for o in it.outputs}, it.outputs, what="bare scope: ")


# -- what the check catches ----------------------------------------------------------------------


def _set_dims(t):
    t.dims[-1] += 1


def _set_type(t):
    t.data_type = pb.TYPE_INT32 if t.data_type == pb.TYPE_INT64 else pb.TYPE_FP64


def _rename(t):
    t.name += "_renamed"


def _not_optional_default(t):
    t.optional = True


TAMPERS = {  # what to change on which tensor of relu.votes, and what the report must say
    "input dims": ("input", "x", _set_dims, "dims"),
    "input datatype": ("input", "classes", _set_type, "data_type is TYPE_INT32"),
    "input name": ("input", "classes", _rename, "not an input"),
    "output dims": ("output", "votes", _set_dims, "dims"),
    "output datatype": ("output", "bias", _set_type, "data_type is TYPE_FP64"),
    "output name": ("output", "bias", _rename, "not an output"),
    "optional without a default": ("input", "classes", _not_optional_default, "no default"),
}


@pytest.mark.parametrize("tamper", TAMPERS)
def test_the_check_catches_a_tampered_config(repos, tmp_path, tamper):
    repo = tampered(repos["relu"], tmp_path)
    kind, tensor, change, said = TAMPERS[tamper]
    path = repo / "relu.votes" / "config.pbtxt"
    config = read_config(path)
    target = next(t for t in getattr(config, kind) if t.name == tensor)
    change(target)
    write_config(path, config)
    check = check_repository(repo)
    assert not check.ok
    problem = next(p for p in check.problems if said in p.message)
    assert problem.file == "relu.votes/config.pbtxt" and problem.tensor in (tensor, target.name)
    assert all(p.file.startswith("relu.votes/") for p in check.problems)  # the others still pass


def test_the_check_runs_the_model_at_the_configs_shapes(repos, tmp_path):
    """A fixed dim over a free one only narrows what Triton accepts, so the configs agree with
    the graph; the run at that size says the output does not have it."""
    repo = tampered(repos["relu"], tmp_path)
    path = repo / "relu.votes" / "config.pbtxt"
    config = read_config(path)
    next(t for t in config.output if t.name == "bias").dims[0] = 5
    write_config(path, config)
    problems = check_repository(repo).problems
    assert [(p.file, p.tensor) for p in problems] == [("relu.votes/1/model.onnx run", "bias")]
    assert "gave shape [2]" in problems[0].message


def test_the_check_catches_wrong_models_and_broken_files(repos, tmp_path):
    repo = tampered(repos["relu"], tmp_path)
    shutil.copy(repo / "relu.columns/1/model.onnx", repo / "relu.rows/1/model.onnx")
    (repo / "relu.scope" / "config.pbtxt").write_text("name: 'relu.scope'\nplatform: [")
    os.remove(repo / "relu.columns" / "1" / "model.onnx")
    config = read_config(repo / "relu" / "config.pbtxt")
    config.name = "other"
    write_config(repo / "relu" / "config.pbtxt", config)
    found = {(p.file, p.tensor): p.message for p in check_repository(repo).problems}
    assert "not an output" in found[("relu.rows/config.pbtxt", "rows")]
    assert "is not a Triton ModelConfig" in found[("relu.scope/config.pbtxt", None)]
    assert found[("relu.columns/1/model.onnx", None)] == "missing"
    assert "folder is 'relu'" in found[("relu/config.pbtxt", None)]
    assert not any(f.startswith("relu.votes") for f, _ in found)


# -- writing -------------------------------------------------------------------------------------


def _tree(folder) -> dict[str, bytes]:
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


class _Failing:
    """A ServedModel whose weights file fails to write midway."""

    def __init__(self, served):
        self.__dict__.update(vars(served))
        self._served = served

    def files(self):
        def fail(path):
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(28, "No space left on device", path)

        return {**self._served.files(), "weights.bin": fail}


def test_the_write_is_atomic_and_replaces_only_an_earlier_repository(model_files, tmp_path):
    relu = load(model_files["relu"], "relu", readings=("votes",))
    multi = load(model_files["multi"], "multi", readings=("rows", "scope"), output="aux")
    repo = tmp_path / "repo"
    write_repository(relu, repo)
    before = _tree(repo)
    with pytest.raises(OutputError, match="No space left"):
        write_repository([*multi[:1], _Failing(multi[1])], repo)
    assert _tree(repo) == before and sorted(os.listdir(tmp_path)) == ["repo"]  # no leftovers
    write_repository(multi, repo)  # replaces the earlier one: nothing of relu's survives
    assert sorted(os.listdir(repo)) == sorted([INDEX, "multi", "multi.rows", "multi.scope"])
    assert check_repository(repo).ok
    # a user's file inside a model folder: refused, naming it, nothing touched
    (repo / "multi" / "notes.txt").write_text("mine")
    kept = _tree(repo)
    with pytest.raises(OutputError, match="multi/notes.txt"):
        write_repository(relu, repo)
    assert _tree(repo) == kept
    # a folder that is not a repository onnxscope wrote
    foreign = tmp_path / "models"
    (foreign / "resnet" / "1").mkdir(parents=True)
    (foreign / "resnet" / "config.pbtxt").write_text('name: "resnet"')
    with pytest.raises(OutputError, match="'resnet'"):
        write_repository(relu, foreign)
    assert sorted(_tree(foreign)) == ["resnet/config.pbtxt"]
    with pytest.raises(Exception, match="both be named 'relu'"):
        write_repository([*relu, *relu], tmp_path / "twice")


# -- the command ---------------------------------------------------------------------------------


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_checks_and_refuses(model_files, tmp_path, capsys):
    repo = tmp_path / "repo"
    code, out, err = cli(
        capsys,
        "triton",
        model_files["relu"],
        model_files["multi"],
        "-o",
        repo,
        "--readings",
        "votes,scope",
        "--device",
        "cuda",
        "--instances",
        "2",
        "--output",
        "aux",  # the multi-output model's second head; relu has none and reads its only one
    )
    assert code == 0, err
    names = ["multi", "multi.scope", "multi.votes", "relu", "relu.scope", "relu.votes"]
    assert sorted(os.listdir(repo)) == sorted([INDEX, *names])
    config = read_config(repo / "multi.votes" / "config.pbtxt")
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, pb.ModelInstanceGroup.KIND_GPU)
    ]
    assert [t.name for t in config.output] == ["logits", "aux", "votes", "bias"]
    votes = next(t for t in config.output if t.name == "votes")
    assert list(votes.dims) == [-1, 1, 5]
    code, out, _ = cli(capsys, "triton", "--check", repo)
    assert code == 0 and "Checked 6 model(s)" in out and ": ok." in out
    config.input[0].dims[1] = 7
    write_config(repo / "multi.votes" / "config.pbtxt", config)
    code, out, _ = cli(capsys, "triton", "--check", repo)
    assert code == 1 and "FAILED multi.votes/config.pbtxt: tensor 'x': dims [1, 7]" in out
    # errors: exit 2, one paragraph, nothing written
    for args, said in [
        (["--readings", "votes,shap"], "Unknown reading 'shap'"),
        (["--input-shape", "y=1x4"], "No MODEL has an input named 'y'"),
        (["--output", "nope"], "No MODEL has an output named 'nope'"),
        (["--instances", "0"], "--instances must be 1 or more"),
    ]:
        code, _, err = cli(capsys, "triton", model_files["relu"], "-o", tmp_path / "new", *args)
        assert code == 2 and said in err, err
        assert not (tmp_path / "new").exists()
    code, _, err = cli(capsys, "triton", model_files["relu"], "-o", repo / "multi" / "1")
    assert code == 2 and "not empty" in err
    code, _, err = cli(capsys, "triton", "--check", tmp_path / "absent")
    assert code == 2 and "is not a folder" in err
