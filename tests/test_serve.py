"""Issue 13, items 2 and 3: `onnxscope serve` over the Open Inference Protocol, talked to with the
real clients (tritonclient's HTTP and gRPC, binary and JSON tensors). Every reading equals the
Python API; every bad request gets its status and a readable error, and the server keeps
serving; 8 clients in parallel each get the answer for their own input; the API key; metrics.

The server runs in this process on 127.0.0.1 and free ports, on $ONNXSCOPE_DEVICE (default the
CPU; `cuda` runs the same tests on the GPU). The subprocess server, its memory and the files it
does not write: test_serve_load.py."""

from __future__ import annotations

import functools
import http.client
import json
import threading

import numpy as np
import pytest
from helpers import assert_outputs_equal, make_model

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
grpc = pytest.importorskip("grpc")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import onnxscope  # noqa: E402
from onnxscope.serve.models import DATATYPES, load  # noqa: E402
from onnxscope.serve.server import Server, Service  # noqa: E402

RNG = np.random.default_rng(13)
MAX_BATCH = 8
LIMIT = 256 << 10  # --max-request-bytes of the test server
PROTOCOLS = ("http-binary", "http-json", "grpc")
CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
}
CODES[500] = "INTERNAL"


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def relu_net():
    nodes = [
        "c = Conv <pads=[1,1,1,1]> (x, W, B)",
        "r = Relu(c)",
        "p = MaxPool <kernel_shape=[2,2], strides=[2,2]> (r)",
        "f = Flatten(p)",
        "y = Gemm <transB=1> (f, G, gb)",
    ]
    inits = {"W": normal(4, 2, 3, 3), "B": normal(4), "G": normal(5, 36), "gb": normal(5)}
    return make_model(nodes, {"x": (1, 2, 6, 6)}, inits=inits)


def se_net():
    """SiLU, then squeeze-excite (GlobalAveragePool, 1x1 convs, a sigmoid gate, Mul)."""
    nodes = [
        "c = Conv <pads=[1,1,1,1]> (x, W, B)",
        "g = Sigmoid(c)",
        "s = Mul(c, g)",
        "q = GlobalAveragePool(s)",
        "e1 = Conv(q, W1, B1)",
        "e2 = Relu(e1)",
        "e3 = Conv(e2, W2, B2)",
        "gate = Sigmoid(e3)",
        "t = Mul(s, gate)",
        "f = Flatten(t)",
        "y = Gemm <transB=1> (f, G, gb)",
    ]
    inits = {
        "W": normal(4, 3, 3, 3),
        "B": normal(4),
        "W1": normal(2, 4, 1, 1),
        "B1": normal(2),
        "W2": normal(4, 2, 1, 1),
        "B2": normal(4),
        "G": normal(3, 64),
        "gb": normal(3),
    }
    return make_model(nodes, {"x": (1, 3, 4, 4)}, inits=inits)


def multi_net():
    """Two outputs of different shapes."""
    nodes = [
        "c = Conv <pads=[1,1,1,1]> (x, W, B)",
        "r = Relu(c)",
        "f = Flatten(r)",
        "y = Gemm <transB=1> (f, G, gb)",
        "z = GlobalAveragePool(r)",
    ]
    inits = {"W": normal(3, 2, 3, 3), "B": normal(3), "G": normal(5, 48), "gb": normal(5)}
    return make_model(nodes, {"x": (1, 2, 4, 4)}, outputs=["y", "z"], inits=inits)


NETS = {"relu": relu_net(), "se": se_net(), "multi": multi_net()}


@pytest.fixture(scope="module")
def server():
    served = [
        m
        for name, model in NETS.items()
        for m in load(model, name, max_batch=MAX_BATCH, providers=None)
    ]
    with Server(Service(served, max_request_bytes=LIMIT), port=0, grpc_port=0) as running:
        yield running


def client(server, protocol: str, **options):
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(server.grpc_address, **options)
    return httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), **options)


def ask(server, protocol, model, feeds, outputs=(), headers=None, connection=None, version=""):
    """The named outputs (all when empty) of `model` for `feeds`, through the client."""
    lib = grpcclient if protocol == "grpc" else httpclient
    binary = protocol != "http-json"
    inputs = []
    for name, value in feeds.items():
        tensor = lib.InferInput(name, list(value.shape), DATATYPES[value.dtype])
        if protocol == "grpc":
            tensor.set_data_from_numpy(value)
        else:
            tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    if protocol == "grpc":
        wanted = [lib.InferRequestedOutput(n) for n in outputs]
    else:  # JSON answers only where asked for by output
        known = server.service.models.get(model)
        names = outputs or (known.outputs if known else ())
        wanted = [lib.InferRequestedOutput(n, binary_data=binary) for n in names]
    c = connection or client(server, protocol)
    result = c.infer(model, inputs, version, outputs=wanted or None, headers=headers)
    response = result.get_response()
    names = [o.name for o in response.outputs] if protocol == "grpc" else None
    names = names or [o["name"] for o in response["outputs"]]
    if protocol == "http-json":  # the answer really is JSON
        assert all("data" in o for o in response["outputs"])
    return {n: result.as_numpy(n) for n in names}


def refused(server, protocol, model, feeds, outputs=(), **kw) -> tuple[str, str]:
    """(status, message) of a request the server must refuse."""
    with pytest.raises(InferenceServerException) as info:
        ask(server, protocol, model, feeds, outputs, **kw)
    return str(info.value.status()).removeprefix("StatusCode."), info.value.message()


def status_of(protocol: str, http_status: int) -> str:
    return CODES[http_status] if protocol == "grpc" else str(http_status)


# -- every reading equals the Python API ------------------------------------------------------


@functools.cache
def scope_of(net: str) -> onnxscope.LinearScope:
    return onnxscope.LinearScope(NETS[net])


def expected(net: str, x):
    return scope_of(net).interpret(x)


def same(got, want, what):
    assert_outputs_equal({what: got}, {what: want}, 1e-6, f"{what} through the server: ")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("net", list(NETS))
def test_every_reading_equals_the_python_api(server, net, protocol):
    x = normal(*server.service.models[net].inputs["x"].shape)
    it = expected(net, x)
    out = it.output_names[0]  # the output the readings read
    n_out = it.outputs[out].size

    got = ask(server, protocol, net, {"x": x})
    assert_outputs_equal(got, it.outputs, 1e-6, f"{net} F(x): ")

    top = int(np.argmax(it.outputs[out]))
    classes = np.array([top, n_out - 1 - top, -1], np.int64)
    got = ask(server, protocol, f"{net}.votes", {"x": x, "classes": classes})
    same(got["votes"], np.stack([it.votes(int(k), out) for k in classes]), "votes")
    same(got["bias"], it.biases[out].ravel()[classes], "bias")
    assert_outputs_equal({n: got[n] for n in it.output_names}, it.outputs, 1e-6, "votes F(x): ")

    indices = np.array([0, n_out - 1], np.int64)
    got = ask(server, protocol, f"{net}.rows", {"x": x, "indices": indices}, ["rows"])
    assert list(got) == ["rows"]  # only the output asked for
    same(got["rows"], it.rows(indices, out), "rows")

    j = np.array([0, x.size // 2, x.size - 1], np.int64)
    columns = it.columns(j)
    columns = columns[out] if isinstance(columns, dict) else columns
    got = ask(server, protocol, f"{net}.columns", {"x": x, "indices": j}, ["columns"])
    same(got["columns"], columns, "columns")

    scope = server.service.models[f"{net}.scope"]
    adjoint_probes = scope_of(net).artifacts({"x": x.shape}).adjoint_probes
    z = normal(3, *x.shape)
    w = {o: normal(2, *it.outputs[o].shape) for o in it.output_names}
    feeds = {"x": x, "linear/probe": z, **{f"adjoint/{adjoint_probes[o]}": w[o] for o in w}}
    assert set(feeds) == set(scope.inputs)
    got = ask(server, protocol, f"{net}.scope", feeds)
    for o in it.output_names:
        same(got[f"linear/{o}"], it.apply_all(z)[o], f"linear/{o}")
        same(got[f"bias/{o}"][0], it.biases[o], f"bias/{o}")
    same(got["adjoint/x"], it.apply_T_all(w), "adjoint/x")
    # the probes omitted: F(x) and c_x alone
    got = ask(server, protocol, f"{net}.scope", {"x": x}, [out, f"bias/{out}"])
    same(got[out], it.outputs[out], out)
    same(got[f"bias/{out}"][0], it.biases[out], f"bias/{out}")


def test_metadata_and_health(server):
    for protocol in ("http-binary", "grpc"):
        c = client(server, protocol)
        assert c.is_server_live() and c.is_server_ready()
        meta = (
            c.get_server_metadata(as_json=True) if protocol == "grpc" else c.get_server_metadata()
        )
        assert meta["name"] == "onnxscope"
        for name, model in server.service.models.items():
            assert c.is_model_ready(name) and c.is_model_ready(name, "1")
            if protocol == "grpc":
                got = c.get_model_metadata(name, as_json=True)
                for t in got["inputs"] + got["outputs"]:  # protobuf's JSON: int64 as strings
                    t["shape"] = [int(d) for d in t["shape"]]
            else:
                got = c.get_model_metadata(name, "1")
            assert got == model.metadata()
    meta = server.service.models["multi.votes"].metadata()
    assert {"name": "classes", "datatype": "INT64", "shape": [-1]} in meta["inputs"]
    assert [t["name"] for t in meta["outputs"]] == ["y", "z", "votes", "bias"]


def test_typed_grpc_contents(server):
    """gRPC's typed contents (fp32_contents, int64_contents) as well as raw bytes."""
    x = normal(1, 2, 6, 6)
    request = service_pb2.ModelInferRequest(model_name="relu.votes", id="typed")
    t = request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    t.contents.fp32_contents.extend(x.ravel().tolist())
    k = request.inputs.add(name="classes", datatype="INT64", shape=[2])
    k.contents.int64_contents.extend([1, 3])
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=10)
        assert response.id == "typed"
        names = [o.name for o in response.outputs]
        votes = response.raw_output_contents[names.index("votes")]
        votes = np.frombuffer(votes, np.float32).reshape(2, *x.shape)
        it = expected("relu", x)
        same(votes, np.stack([it.votes(1), it.votes(3)]), "votes")
        # a typed field of the wrong type is refused
        k.contents.Clear()
        k.contents.fp32_contents.extend([1.0, 3.0])
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'classes'" in info.value.details() and "int64_contents" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:  # not served: the base class's answer
            stub.ModelConfig(service_pb2.ModelConfigRequest(name="relu"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- bad requests: a 4xx naming what was wrong, then the next request is served -----------------


def good_request_still_works(server, protocol):
    x = normal(1, 2, 6, 6)
    got = ask(server, protocol, "relu.votes", {"x": x, "classes": np.array([0], np.int64)})
    same(got["votes"][0], expected("relu", x).votes(0), "votes after an error")


def bad_requests():
    """(what, model, feeds, outputs, status, words the message must hold); a model "NAME/2"
    asks for version 2."""
    x, k = normal(1, 2, 6, 6), np.array([1], np.int64)
    nan, inf = x.copy(), x.copy()
    nan[0, 1, 2, 3], inf[0, 0, 0, 0] = np.nan, -np.inf
    y, z = normal(2, 1, 5), normal(3, 1, 3, 1, 1)
    m = normal(1, 2, 4, 4)
    return [
        ("unknown model", "nope", {"x": x}, (), 404, ["'nope'", "relu.votes"]),
        ("unknown version", "relu/2", {"x": x}, (), 404, ["'relu'", "version 1 only"]),
        ("unknown input", "relu", {"x": x, "q": x}, (), 400, ["'q'", "inputs"]),
        ("unknown output", "relu", {"x": x}, ["w"], 400, ["'w'", "outputs"]),
        ("wrong shape", "relu", {"x": x.reshape(1, 2, 3, 12)}, (), 400, ["'x'", "[1, 2, 3, 12]"]),
        ("wrong dtype", "relu", {"x": x.astype(np.float64)}, (), 400, ["'x'", "FP64", "FP32"]),
        ("missing input", "relu.votes", {"x": x}, (), 400, ["'classes'", "missing"]),
        ("classes dtype", "relu.votes", {"x": x, "classes": k.astype(np.int32)}, (), 400,
         ["INT32"]),
        ("K over --max-batch", "relu.rows", {"x": x, "indices": np.zeros(MAX_BATCH + 1, np.int64)},
         (), 400, ["'indices'", str(MAX_BATCH), "--max-batch"]),
        ("index out of range", "relu.votes", {"x": x, "classes": np.array([5], np.int64)}, (),
         400, ["'classes'", "range"]),
        ("NaN in x", "relu", {"x": nan}, (), 400, ["'x'", "NaN"]),
        ("Inf in x", "relu.votes", {"x": inf, "classes": k}, (), 400, ["'x'", "infinite"]),
        ("probes with different K", "multi.scope",
         {"x": m, "adjoint/probe:y": y, "adjoint/probe:z": z}, (), 400,
         ["'adjoint/probe:y'", "'adjoint/probe:z'", "2 != 3"]),
    ]  # fmt: skip


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, protocol):
    for what, model, feeds, outputs, status, words in bad_requests():
        model, _, version = model.partition("/")
        got = refused(server, protocol, model, feeds, outputs, version=version)
        assert got[0] == status_of(protocol, status), f"{what}: {got}"
        for word in words:
            assert word in got[1], f"{what}: {word!r} not in {got[1]!r}"
        good_request_still_works(server, protocol)


def post(server, path, body: bytes, headers=None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a raw POST (requests no client would send)."""
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        connection.close()


def json_input(x, datatype="FP32", **entry):
    return {"name": "x", "datatype": datatype, "shape": list(x.shape), **entry}


def test_malformed_http_requests(server):
    x = normal(1, 2, 6, 6)
    raw = x.tobytes()
    infer = "/v2/models/relu/infer"

    def binary(header: dict, blob: bytes, length=None):
        head = json.dumps(header).encode()
        sent = {"Inference-Header-Content-Length": str(len(head) if length is None else length)}
        return post(server, infer, head + blob, sent)

    sized = lambda n: {"inputs": [json_input(x, parameters={"binary_data_size": n})]}  # noqa: E731
    cases = [
        ("malformed JSON", post(server, infer, b'{"inputs": [{"name": "x"'), 400, ["JSON"]),
        ("not an object", post(server, infer, b"[1, 2]"), 400, ["object"]),
        ("no inputs", post(server, infer, b'{"inputs": []}'), 400, ["inputs"]),
        ("datatype string", post(server, infer, json.dumps(
            {"inputs": [json_input(x, "FP33", data=x.ravel().tolist())]}).encode()),
         400, ["'x'", "'FP33'", "datatype"]),
        ("BYTES", post(server, infer, json.dumps(
            {"inputs": [json_input(x, "BYTES", data=["a"] * x.size)]}).encode()),
         400, ["'x'", "BYTES", "not supported"]),
        ("data count", post(server, infer, json.dumps(
            {"inputs": [json_input(x, data=[1.0, 2.0])]}).encode()), 400, ["'x'", "72", "2"]),
        ("strings as FP32", post(server, infer, json.dumps(
            {"inputs": [json_input(x, data=["1"] * x.size)]}).encode()), 400, ["'x'", "numbers"]),
        ("binary sizes short", binary(sized(len(raw) - 4), raw), 400,
         ["'x'", str(len(raw)), str(len(raw) - 4)]),
        ("binary sizes long", binary(sized(len(raw) + 4), raw), 400, ["'x'", "past the end"]),
        ("header length", binary(sized(len(raw)), raw, length=10**6), 400,
         ["Inference-Header-Content-Length"]),
        ("body over the limit", post(server, infer, b" " * (LIMIT + 1)), 413, [str(LIMIT)]),
        ("no route", post(server, "/v2/nothing", b"{}"), 404, ["/v2/nothing"]),
    ]  # fmt: skip
    for what, (status, body, _), want, words in cases:
        assert status == want, f"{what}: {status} {body}"
        assert set(body) == {"error"}, f"{what}: {body}"
        for word in words:
            assert word in body["error"], f"{what}: {word!r} not in {body['error']!r}"
        good_request_still_works(server, "http-binary")
    # the binary form's own answer, per output binary_data, with an id
    head = json.dumps(
        {
            "id": "r1",
            "inputs": [json_input(x, parameters={"binary_data_size": len(raw)})],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    status, body, headers = post_raw(server, infer, head + raw, len(head))
    assert status == 200
    length = int(headers["inference-header-content-length"])
    header = json.loads(body[:length])
    assert header["id"] == "r1" and header["outputs"][0]["parameters"]["binary_data_size"] == 20
    same(np.frombuffer(body[length:], np.float32).reshape(1, 5), expected("relu", x).output,
         "y")  # fmt: skip


def post_raw(server, path, body: bytes, header_length: int) -> tuple[int, bytes, dict]:
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            "POST", path, body=body, headers={"Inference-Header-Content-Length": str(header_length)}
        )
        response = connection.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, response.read(), headers
    finally:
        connection.close()


def test_grpc_message_over_the_limit(server):
    big = normal(1, 2, 6, LIMIT // 48 + 8)  # more than LIMIT bytes
    status, message = refused(server, "grpc", "relu", {"x": big})
    assert status == "RESOURCE_EXHAUSTED" and str(LIMIT) in message
    good_request_still_works(server, "grpc")


class Flaky:
    """A session whose first run fails as a server fault would."""

    def __init__(self, session):
        self.session, self.failed = session, False

    def run(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise RuntimeError("a real fault")
        return self.session.run(*args, **kwargs)


@pytest.mark.parametrize("protocol", ["http-binary", "grpc"])
def test_a_server_fault_is_500_and_the_next_request_is_served(server, protocol, monkeypatch):
    model = server.service.models["relu.votes"]
    monkeypatch.setitem(model.__dict__, "session", Flaky(model.session))
    x, k = normal(1, 2, 6, 6), np.array([2], np.int64)
    status, message = refused(server, protocol, "relu.votes", {"x": x, "classes": k})
    assert status == status_of(protocol, 500) and "relu.votes" in message
    assert "a real fault" not in message  # the fault is logged, not sent
    good_request_still_works(server, protocol)


# -- concurrency --------------------------------------------------------------------------------


def test_parallel_clients_each_get_their_own_answer(server):
    """8 clients x 100 requests, each with its own x (so its own masks), in parallel; every answer
    equals the same graph run offline on that x."""
    votes = server.service.models["relu.votes"]
    jobs = [
        [(normal(1, 2, 6, 6), np.array([i % 5], np.int64)) for i in range(100)] for _ in range(8)
    ]
    offline = [[votes.infer({"x": x, "classes": k}) for x, k in job] for job in jobs]
    answers, errors = [[None] * 100 for _ in jobs], []

    def work(c: int) -> None:
        protocol = PROTOCOLS[0] if c % 2 else PROTOCOLS[2]
        connection = client(server, protocol)
        try:
            for i, (x, k) in enumerate(jobs[c]):
                got = ask(server, protocol, "relu.votes", {"x": x, "classes": k}, ["votes", "bias"],
                          connection=connection)  # fmt: skip
                answers[c][i] = got
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"client {c}: {exc!r}")

    threads = [threading.Thread(target=work, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads), errors
    for c, job in enumerate(offline):
        for i, want in enumerate(job):
            for name in ("votes", "bias"):
                same(answers[c][i][name], want[name], f"client {c} request {i} {name}")


# -- API key, metrics ------------------------------------------------------------------------


def test_api_key():
    key = "k3y-" + "x" * 28
    served = load(NETS["relu"], "relu", readings=(), providers=None)
    with Server(Service(served, api_key=key.encode()), port=0, grpc_port=0) as keyed:
        x = normal(1, 2, 6, 6)
        for protocol in ("http-binary", "grpc"):
            # (lowercase: gRPC metadata keys are; HTTP headers are case-blind)
            for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": key}):
                status, message = refused(keyed, protocol, "relu", {"x": x}, headers=headers)
                assert status == status_of(protocol, 401) and "API key" in message
            good = {"authorization": f"Bearer {key}"}
            got = ask(keyed, protocol, "relu", {"x": x}, headers=good)
            same(got["y"], expected("relu", x).output, "y with the key")
            c = client(keyed, protocol)
            assert c.is_server_live() and c.is_server_ready()  # health stays open
            with pytest.raises(InferenceServerException):
                c.get_model_metadata("relu")
            assert c.get_model_metadata("relu", headers=good)
        host, port = keyed.http_url.removeprefix("http://").rsplit(":", 1)
        for path, headers, want in [
            ("/metrics", {}, 401),
            ("/metrics", {"Authorization": f"Bearer {key}"}, 200),
            ("/v2/health/ready", {}, 200),
            ("/v2/models/relu/ready", {}, 401),
        ]:
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request("GET", path, headers=headers)
            assert connection.getresponse().status == want, path
            connection.close()
        assert metric(keyed, "onnxscope_unauthorized_requests", protocol="grpc") == 4


def metric(server, family: str, **labels) -> float:
    """The sum of a metric family's samples with these labels, read from /metrics."""
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {}
    if server.service.api_key is not None:
        headers["Authorization"] = f"Bearer {server.service.api_key.decode()}"
    connection.request("GET", "/metrics", headers=headers)
    text = connection.getresponse().read().decode()
    connection.close()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == family + "_total" and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                total += sample.value
    return total


def test_metrics_count_requests_errors_and_latency(server):
    x = normal(1, 2, 6, 6)
    counts = lambda: (  # noqa: E731
        metric(server, "onnxscope_requests", model="se", protocol="grpc"),
        metric(server, "onnxscope_request_errors", model="se", protocol="grpc", status="400"),
        metric(server, "onnxscope_requests", model="(unknown)", protocol="http"),
    )
    before = counts()
    ask(server, "grpc", "se", {"x": normal(1, 3, 4, 4)})
    refused(server, "grpc", "se", {"x": x})  # wrong shape
    refused(server, "http-binary", "no-such-model", {"x": x})
    assert np.subtract(counts(), before).tolist() == [2, 1, 1]
    host, port = server.http_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    assert 'onnxscope_request_duration_seconds_count{model="se",protocol="grpc"}' in text


def test_command_line_errors(tmp_path, capsys):
    from onnxscope.cli import main

    path = tmp_path / "relu.onnx"
    path.write_bytes(NETS["relu"].SerializeToString())
    assert main(["serve", str(path), "--readings", "votes,nope"]) == 2
    assert "Unknown reading 'nope'" in capsys.readouterr().err
    assert main(["serve", str(path), "--input-shape", "q=1x2"]) == 2
    assert "No MODEL has an input named 'q'" in capsys.readouterr().err
    key = tmp_path / "key"
    key.write_text("two words\n")
    assert main(["serve", str(path), "--api-key-file", str(key)]) == 2
    assert "printable ASCII" in capsys.readouterr().err
