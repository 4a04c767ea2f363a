"""Issue 13: a bounded load test of `onnxscope serve` as a command (a subprocess, loopback only):
2,000 requests (plain, votes, rows; REST binary and gRPC) within a time cap, zero errors, no
memory growth of the server process after its warm-up (RSS from /proc), and no file written
where it runs or beside its model. On $ONNXSCOPE_DEVICE (default the CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import make_model

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
pytest.importorskip("grpc")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

REQUESTS, WARMUP, CLIENTS = 2000, 300, 4
TIME_CAP = 60.0  # seconds for the 2,000 requests
GROWTH = 8 << 20  # RSS growth allowed after the warm-up (allocator noise, not a leak per request)
START_TIMEOUT = 60.0

RNG = np.random.default_rng(5)


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def net():
    nodes = [
        "c = Conv <pads=[1,1,1,1]> (x, W, B)",
        "g = Sigmoid(c)",
        "s = Mul(c, g)",
        "p = MaxPool <kernel_shape=[2,2], strides=[2,2]> (s)",
        "f = Flatten(p)",
        "y = Gemm <transB=1> (f, G, gb)",
    ]
    inits = {"W": normal(4, 3, 3, 3), "B": normal(4), "G": normal(10, 64), "gb": normal(10)}
    return make_model(nodes, {"x": ("N", 3, 8, 8)}, inits=inits)


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) << 10


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The command, on free ports, run in an empty folder: (process, REST, gRPC, folders)."""
    models, cwd = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("cwd")
    (models / "net.onnx").write_bytes(net().SerializeToString())
    options = "--port 0 --grpc-port 0 --input-shape x=1x3x8x8 --readings votes,rows".split()
    options += ["--device", os.environ.get("ONNXSCOPE_DEVICE") or "cpu"]
    command = [sys.executable, "-m", "onnxscope", "serve", str(models / "net.onnx"), *options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not any("gRPC" in line for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the server did not start: {''.join(lines)} {process.stderr.read()}")
        time.sleep(0.05)
    rest = re.search(r"REST\s+http://(\S+)/v2", "".join(lines)).group(1)
    grpc_address = re.search(r"gRPC\s+(\S+)", "".join(lines)).group(1)
    try:
        yield process, rest, grpc_address, (models, cwd)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def requests(count: int):
    """`count` requests cycling through the plain model, votes and rows."""
    for i in range(count):
        x = normal(1, 3, 8, 8)
        if i % 3 == 0:
            yield "net", {"x": x}
        elif i % 3 == 1:
            yield "net.votes", {"x": x, "classes": np.array([i % 10], np.int64)}
        else:
            yield "net.rows", {"x": x, "indices": np.arange(4, dtype=np.int64)}


def hammer(rest: str, grpc_address: str, count: int) -> list[str]:
    """`count` requests from CLIENTS threads (half REST binary, half gRPC): the errors."""
    errors, jobs = [], list(requests(count))

    def work(c: int) -> None:
        lib = grpcclient if c % 2 else httpclient
        client = lib.InferenceServerClient(grpc_address if c % 2 else rest)
        for model, feeds in jobs[c::CLIENTS]:
            try:
                inputs = []
                for name, value in feeds.items():
                    dtype = "FP32" if value.dtype == np.float32 else "INT64"
                    tensor = lib.InferInput(name, list(value.shape), dtype)
                    tensor.set_data_from_numpy(value)
                    inputs.append(tensor)
                result = client.infer(model, inputs)
                assert result.as_numpy("y").shape == (1, 10)
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(f"{model}: {exc!r}")

    threads = [threading.Thread(target=work, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIME_CAP)
    assert not any(t.is_alive() for t in threads), "the load did not finish within the time cap"
    return errors


def test_load_without_errors_or_memory_growth(served):
    process, rest, grpc_address, (models, cwd) = served
    assert not hammer(rest, grpc_address, WARMUP)
    before = rss(process.pid)
    start = time.monotonic()
    errors = hammer(rest, grpc_address, REQUESTS)
    elapsed = time.monotonic() - start
    after = rss(process.pid)
    print(f"RSS {before >> 10} -> {after >> 10} KiB over {REQUESTS} requests in {elapsed:.1f} s")
    assert not errors, errors[:5]
    assert elapsed < TIME_CAP
    assert after - before < GROWTH, f"RSS grew {(after - before) >> 10} KiB over {REQUESTS}"
    assert process.poll() is None
    # the server wrote nothing where it runs nor beside its model
    assert os.listdir(cwd) == [] and os.listdir(models) == ["net.onnx"]
