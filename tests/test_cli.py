"""The command line: outputs, exit codes, one-paragraph errors, and the input file left alone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "samples", "00_default", "tinynet.onnx")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "onnxscope", *args], capture_output=True, text=True, timeout=300
    )


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def small_model(nodes, extra_inits=(), opset=17, out_shape=(1, 4, 6, 6)):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), *nodes],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        [w, *extra_inits],
    )
    imports = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = max(4, helper.find_min_ir_version_for(imports))  # older runtimes
    return model


@pytest.fixture
def sigmoid_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(small_model([helper.make_node("Sigmoid", ["c"], ["y"])]), path)
    return path


def assert_one_paragraph_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    # notices (a random input was used, ...) may come first, each on its own line
    lines = proc.stderr.strip().splitlines()
    err = "\n".join(line for line in lines if not line.startswith("onnxscope: notice:"))
    assert err.startswith("onnxscope: error:"), err
    assert "Traceback" not in err and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


def test_default_model_runs_the_main_job(tmp_path):
    before = digest(DEFAULT_MODEL)
    proc = run_cli("verify", DEFAULT_MODEL, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["reconstruction"] <= 1e-5 and result["linearity"] <= 1e-5
    proc = run_cli("rewrite", DEFAULT_MODEL, "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert digest(DEFAULT_MODEL) == before


def test_inspect_lists_units(sigmoid_model):
    proc = run_cli("inspect", str(sigmoid_model))
    assert proc.returncode == 0, proc.stderr
    assert "Sigmoid" in proc.stdout and "secant gain" in proc.stdout
    data = json.loads(run_cli("inspect", str(sigmoid_model), "--json").stdout)
    assert [u["op"] for u in data["units"]] == ["Sigmoid"] and data["unsupported"] == []


def test_rewrite_writes_standalone_artifacts(sigmoid_model, tmp_path):
    before = digest(sigmoid_model)
    out = tmp_path / "artifacts"
    proc = run_cli("rewrite", str(sigmoid_model), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == [
        "adjoint.onnx",
        "bias.onnx",
        "columns.onnx",
        "linear.onnx",
        "manifest.json",
        "mask.onnx",
        "rows.onnx",
        "scope.onnx",
        "votes.onnx",
    ]
    assert digest(sigmoid_model) == before
    manifest = json.loads((out / "manifest.json").read_text())
    # The files work on their own: feed mask.onnx's outputs to linear.onnx and bias.onnx by name.
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)
    mask = ort.InferenceSession(str(out / "mask.onnx"))
    masks = dict(zip([o.name for o in mask.get_outputs()], mask.run(None, {"x": x})))
    linear = ort.InferenceSession(str(out / "linear.onnx"))
    feeds = {name: masks[src] for name, src in manifest["linear_inputs"]["masks"].items()}
    (ax,) = linear.run(None, {"probe": x[None], **feeds})
    bias = ort.InferenceSession(str(out / "bias.onnx"))
    (c,) = bias.run(None, {n: masks[s] for n, s in manifest["bias_inputs"]["masks"].items()})
    np.testing.assert_allclose(ax[0] + c[0], masks["y"], rtol=1e-5, atol=1e-6)
    adjoint = ort.InferenceSession(str(out / "adjoint.onnx"))
    spec = manifest["adjoint_inputs"]
    w = np.random.default_rng(2).standard_normal((1, 1, 4, 6, 6)).astype(np.float32)
    feeds = {n: masks[s] for n, s in spec["masks"].items()}
    (atw,) = adjoint.run(None, {spec["probes"]["y"]: w, **feeds})
    assert abs(np.vdot(ax, w) - np.vdot(x, atw)) <= 1e-5 * np.linalg.norm(ax) * np.linalg.norm(w)
    # scope.onnx: the whole LinearScope in one model, for servers
    scope = ort.InferenceSession(str(out / "scope.onnx"))
    names = [o.name for o in scope.get_outputs()]
    assert names == ["y", "linear/y", "bias/y", "adjoint/x"]
    f, az, cz, atw2 = scope.run(None, {"x": x, "linear/probe": x[None], "adjoint/probe": w})
    np.testing.assert_allclose(az[0] + cz[0], f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(atw2, atw, rtol=1e-6, atol=1e-7)
    # the reading graphs, fed by the names the manifest gives: votes and their bias sum to F
    votes_spec = manifest["readings"]["votes"]
    assert [t["name"] for t in votes_spec["inputs"]] == ["x", "classes"]
    assert [t["name"] for t in votes_spec["outputs"]] == ["y", "votes", "bias"]
    assert votes_spec["outputs"][1]["shape"] == ["K", 1, 2, 6, 6]
    votes = ort.InferenceSession(str(out / votes_spec["file"]))
    classes = np.array([0, 17, -1], np.int64)
    f, v, c_k = votes.run(None, {"x": x, "classes": classes})
    np.testing.assert_allclose(v.reshape(3, -1).sum(1) + c_k, f.ravel()[classes], rtol=1e-5)
    assert manifest["readings_unavailable"] == {}
    for name in os.listdir(out):
        if name.endswith(".onnx"):
            onnx.checker.check_model(onnx.load(out / name), full_check=True)


def test_rewrite_refuses_to_overwrite_its_input(tmp_path):
    path = tmp_path / "mask.onnx"
    onnx.save(small_model([helper.make_node("Relu", ["c"], ["y"])]), path)
    before = digest(path)
    proc = run_cli("rewrite", str(path), "-o", str(tmp_path))
    assert_one_paragraph_error(proc, "overwrite the input model")
    assert digest(path) == before


def test_verify_exit_status_follows_tolerance(sigmoid_model):
    assert run_cli("verify", str(sigmoid_model)).returncode == 0
    # --tol 0: only the measured noise floors remain as bounds (8 x floor)
    proc = run_cli("verify", str(sigmoid_model), "--tol", "0", "--json")
    result = json.loads(proc.stdout)
    expected = all(result["errors"][k] <= 8 * result["noise"][k] for k in result["errors"])
    assert result["ok"] == expected and proc.returncode == (0 if expected else 1)
    assert run_cli("verify", str(sigmoid_model), "--tol", "-1").returncode == 2


def test_verify_reads_inputs(sigmoid_model, tmp_path):
    x = np.random.default_rng(2).standard_normal((1, 2, 6, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    proc = run_cli("verify", str(sigmoid_model), "--input", f"x={tmp_path / 'x.npy'}")
    assert proc.returncode == 0, proc.stderr
    assert "reconstruction" in proc.stdout


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.onnx"
    data = small_model([helper.make_node("Relu", ["c"], ["y"])]).SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    before = digest(path)
    for command in ("inspect", "verify"):
        assert_one_paragraph_error(run_cli(command, str(path)), "could not be read")
    assert_one_paragraph_error(run_cli("rewrite", str(path), "-o", str(tmp_path / "o")))
    assert digest(path) == before
    assert not (tmp_path / "o").exists()


def test_missing_file(tmp_path):
    assert_one_paragraph_error(run_cli("verify", str(tmp_path / "nope.onnx")), "does not exist")


def test_wrong_input_shape(sigmoid_model, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 6, 6), np.float32))
    proc = run_cli("verify", str(sigmoid_model), "--input", f"x={tmp_path / 'x.npy'}")
    assert_one_paragraph_error(proc, "shape (1, 3, 6, 6)")


def test_nan_input(sigmoid_model, tmp_path):
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "x.npy", x)
    proc = run_cli("verify", str(sigmoid_model), "--input", f"x={tmp_path / 'x.npy'}")
    assert_one_paragraph_error(proc, "NaN")


def _branch(name, op):
    out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 4, 6, 6])
    return helper.make_graph([helper.make_node(op, ["c"], [f"{name}_out"])], name, [], [out])


def test_if_on_the_input_path(tmp_path):
    """An If decided by the input's values is refused; a constant one is folded (issue 16)."""
    zero = numpy_helper.from_array(np.array(0, np.float32), "zero")
    decide = [
        helper.make_node("ReduceSum", ["c"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"]),
    ]
    node = helper.make_node(
        "If",
        ["cond"],
        ["y"],
        then_branch=_branch("then", "Relu"),
        else_branch=_branch("else", "Sigmoid"),
    )
    path = tmp_path / "if.onnx"
    onnx.save(small_model([*decide, node], [zero]), path)
    before = digest(path)
    assert_one_paragraph_error(
        run_cli("rewrite", str(path), "-o", str(tmp_path / "o")), "(If)", "control flow"
    )
    assert digest(path) == before and not (tmp_path / "o").exists()
    constant = numpy_helper.from_array(np.array(True), "cond")
    onnx.save(small_model([node], [constant]), path)
    done = run_cli("rewrite", str(path), "-o", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    units = json.loads((tmp_path / "o" / "manifest.json").read_text())["units"]
    assert [u["op"] for u in units] == ["Relu"]  # the then branch, folded


def test_loop_on_the_input_path(tmp_path):
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Relu", ["v_in"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 4, 6, 6]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 4, 6, 6]),
        ],
    )
    inits = [
        numpy_helper.from_array(np.array(2, np.int64), "trip"),
        numpy_helper.from_array(np.array(True), "keep"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
    ]
    # a static trip count: unrolled, its two Relus frozen, exact
    node = helper.make_node("Loop", ["trip", "keep", "c"], ["y"], body=body)
    path = tmp_path / "loop.onnx"
    onnx.save(small_model([node], inits), path)
    done = run_cli("inspect", str(path))
    assert done.returncode == 0 and "2 frozen unit(s)" in done.stdout, done.stderr + done.stdout
    assert run_cli("verify", str(path)).returncode == 0
    # a trip count the data decides (1 + [max(c) > 0]): refused, naming the node and why
    decide = [
        helper.make_node("ReduceMax", ["c"], ["top"], keepdims=0),
        helper.make_node("Greater", ["top", "zero"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["flag"], to=TensorProto.INT64),
        helper.make_node("Add", ["flag", "trip"], ["trips"]),
        helper.make_node("Loop", ["trips", "keep", "c"], ["y"], body=body),
    ]
    onnx.save(small_model(decide, inits), path)
    assert_one_paragraph_error(
        run_cli("verify", str(path)), "(Loop)", "decided by the input's values"
    )


def test_unsupported_ops_are_all_listed(tmp_path):
    k = numpy_helper.from_array(np.array([1], np.int64), "k")
    nodes = [
        helper.make_node("TopK", ["c", "k"], ["t", "ti"], axis=3),
        helper.make_node("Relu", ["t"], ["r"]),
        helper.make_node("LpNormalization", ["r"], ["y"], axis=1),
    ]
    path = tmp_path / "topk.onnx"
    onnx.save(small_model(nodes, [k], out_shape=(1, 4, 6, 1)), path)
    proc = run_cli("rewrite", str(path), "-o", str(tmp_path / "o"))
    assert_one_paragraph_error(proc, "(TopK)", "(LpNormalization)", "no linearization rule")
    assert not (tmp_path / "o").exists()
    proc = run_cli("inspect", str(path))
    assert proc.returncode == 1
    assert "TopK" in proc.stdout and "LpNormalization" in proc.stdout


def test_the_committed_coverage_ledger_is_current():
    """docs/op-coverage.txt is `onnxscope inspect --ops`: rule changes show up in review."""
    proc = run_cli("inspect", "--ops")
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(ROOT, "docs", "op-coverage.txt")) as f:
        committed = f.read()
    assert proc.stdout == committed, "regenerate: onnxscope inspect --ops > docs/op-coverage.txt"
    assert "Relu " in committed and "no rule" in committed


def test_the_ledger_names_what_is_expanded_before_analysis():
    """The ops expanded before analysis have no rule of their own and a row that says how: the
    recurrent ops unrolled (graph/recurrent.py), If / Loop / Scan folded or unrolled where the
    fixed shapes decide them (graph/controlflow.py); not "no rule: refused"."""
    from onnxscope.graph.recurrent import RECURRENT_OPS
    from onnxscope.rewrite.registry import CANONICALIZED, RULES, coverage

    assert set(CANONICALIZED) == RECURRENT_OPS | {"If", "Loop", "Scan"}
    assert not set(CANONICALIZED) & set(RULES)
    rows = {op: (status, adjoint) for op, status, adjoint in coverage()}
    for op, how in CANONICALIZED.items():
        assert rows[op] == (how, "yes"), (op, rows[op])
    assert "static" in rows["If"][0] and "static" in rows["Loop"][0]


def test_a_closed_pipe_is_not_an_error(tmp_path):
    """`onnxscope inspect --ops | true`: the reader is gone before the first line is written
    (as with `| head` on long output); that is no internal error."""
    cmd = f"'{sys.executable}' -m onnxscope inspect --ops | true"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert proc.stderr == "", proc.stderr
    assert proc.returncode == 0
