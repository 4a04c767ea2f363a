"""The explorer's click-to-row latency on CPU: the HTTP round trip of the request the page
makes when a person clicks (bench/nets.py nets, exported to a temporary folder), in one run:

    .venv/bin/python bench/bench_explore.py [--repeat 30] [--threads N]

- ResNet-18 at 224² (a classifier): a click on a class is GET /explore/NAME/votes?class=K, the
  row A_xᵀe_k times x with its bias; a click on the input is /column (A_x e_j);
- a U-Net at 256² (image to image): a click on an output pixel is GET /explore/NAME/row, the
  row A_xᵀe_i; a click on the input is /column.

Each request is timed from the client (urllib over loopback, JSON with the base64 map decoded),
positions drawn at random per request (nothing cached: every answer runs a reading graph), the
server in this process (uvicorn in a thread, as `onnxscope explore` runs it). Median and p95.
The goal (issue 19): well under 200 ms on CPU."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nets import ResNet18, export_with_free_batch, seeded, unet  # noqa: E402
from timing import cpu_name, loadavg  # noqa: E402

from onnxscope.serve.explore import decode, make_explorers  # noqa: E402
from onnxscope.serve.models import load  # noqa: E402
from onnxscope.serve.server import Server, Service  # noqa: E402

NETS = {"resnet18": (ResNet18, 224), "unet256": (unet, 256)}


def served_explorer(name: str, folder: str, threads: int | None):
    make, size = NETS[name]
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    path = export_with_free_batch(seeded(make()), x, os.path.join(folder, f"{name}.onnx"))
    start = time.perf_counter()
    models = load(path, name, input_shapes={"x": [1, 3, size, size]}, threads=threads)
    explorers = make_explorers(models)
    return models, explorers, time.perf_counter() - start


def timed(url: str, key: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        decode(json.loads(response.read())[key])
    return time.perf_counter() - start


def clicks(base: str, kind: str, size: int, classes: int, repeat: int, rng) -> dict:
    """Latencies (s) of each kind of click, interleaved, after one warm-up of each."""

    def at() -> str:
        return f"c=0&y={rng.integers(size)}&x={rng.integers(size)}"

    if kind == "vector":
        asks = {"class -> votes": lambda: timed(f"{base}/votes?class={rng.integers(classes)}",
                                                "votes")}  # fmt: skip
    else:
        asks = {"output pixel -> row": lambda: timed(f"{base}/row?{at()}", "row")}
    asks["input pixel -> column"] = lambda: timed(f"{base}/column?{at()}", "column")
    for ask in asks.values():
        ask()
    times = {name: [] for name in asks}
    for _ in range(repeat):
        for name, ask in asks.items():
            times[name].append(ask())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="requests of each kind (30)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    print(
        f"# onnxscope explorer, click-to-answer over HTTP: {cpu_name()}, {os.cpu_count()} cores, "
        f"load {loadavg()}"
    )
    print(f"{'net':10s} {'click':24s} {'median ms':>10s} {'p95 ms':>8s}  (n={args.repeat})")
    with tempfile.TemporaryDirectory() as folder:
        for name in NETS:
            models, explorers, setup = served_explorer(name, folder, args.threads)
            explorer = explorers[name]
            service = Service(models)
            with Server(service, port=0, grpc_port=None, explorers=explorers) as server:
                base = f"{server.http_url}/explore/{name}"
                kind = "image" if explorer.image_output else "vector"
                size = explorer.x_shape[2]
                classes = int(np.prod(explorer.y_shape))
                found = clicks(base, kind, size, classes, args.repeat, rng)
            for click, seconds in found.items():
                ms = 1000 * np.array(seconds)
                print(f"{name:10s} {click:24s} {np.median(ms):10.1f} "
                      f"{np.percentile(ms, 95):8.1f}")  # fmt: skip
            print(f"{'':10s} (rewrite + reading graphs + sessions: {setup:.1f} s)")


if __name__ == "__main__":
    main()
