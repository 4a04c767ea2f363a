"""`onnxscope serve` under a client: ResNet-18 at 224² (bench/nets.py) served by the command (a
subprocess on loopback), timed through tritonclient with binary tensors, in one run:

    .venv/bin/python bench/bench_serve.py [--device cpu|cuda] [--repeat 30] [--seconds 20]
                                          [--protocol http|grpc] [--threads N]

- latency (p50, p99) of a plain infer, a votes request for the top class (K = 1), and 16 rows
  (K = 16: the top 16 classes), in interleaved rounds;
- requests per second with 8 clients in parallel, plain and votes, each for --seconds.

The goal (issue 13): a votes request at most 3x a plain infer through the same server. The model
is exported to a temporary folder, removed at the end; the server writes nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nets import ResNet18, export_with_free_batch, seeded  # noqa: E402

CLIENTS, K_ROWS, START_TIMEOUT = 8, 16, 300.0
VOTES = "votes, top class (K=1)"


def start_server(path: str, args) -> tuple[subprocess.Popen, str, str]:
    command = [sys.executable, "-m", "onnxscope", "serve", path, "--port", "0", "--grpc-port",
               "0", "--input-shape", "x=1x3x224x224", "--readings", "votes,rows", "--device",
               args.device, "--max-batch", str(K_ROWS)]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while not any("gRPC" in line for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"the server did not start: {''.join(lines)}")
        time.sleep(0.1)
    text = "".join(lines)
    return (
        process,
        re.search(r"REST\s+http://(\S+)/v2", text)[1],
        re.search(r"gRPC\s+(\S+)", text)[1],
    )


class Client:
    """One tritonclient connection (binary tensors) and the three requests."""

    def __init__(self, protocol: str, address: str):
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.lib = grpcclient if protocol == "grpc" else httpclient
        self.client = self.lib.InferenceServerClient(address)

    def infer(self, model: str, feeds: dict, outputs: list[str]) -> dict:
        inputs = []
        for name, value in feeds.items():
            tensor = self.lib.InferInput(
                name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64"
            )
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        wanted = [self.lib.InferRequestedOutput(n) for n in outputs]
        result = self.client.infer(model, inputs, outputs=wanted)
        return {n: result.as_numpy(n) for n in outputs}


def requests(x: np.ndarray, top: np.ndarray) -> dict[str, tuple]:
    return {
        "plain infer": ("resnet18", {"x": x}, ["y"]),
        VOTES: ("resnet18.votes", {"x": x, "classes": top[:1]}, ["votes", "bias"]),
        f"{K_ROWS} rows (K={K_ROWS})": ("resnet18.rows", {"x": x, "indices": top}, ["rows"]),
    }


def latencies(client: Client, asks: dict, repeat: int) -> dict[str, np.ndarray]:
    times = {name: [] for name in asks}
    for _ in range(2):  # warm-up
        for ask in asks.values():
            client.infer(*ask)
    for _ in range(repeat):
        for name, ask in asks.items():
            start = time.perf_counter()
            client.infer(*ask)
            times[name].append(time.perf_counter() - start)
    return {name: np.array(t) for name, t in times.items()}


def throughput(protocol: str, address: str, ask: tuple, seconds: float) -> tuple[float, int]:
    """Requests per second of CLIENTS clients in parallel for `seconds`, and the errors."""
    counts, errors = [0] * CLIENTS, []
    stop = time.monotonic() + seconds

    def work(c: int) -> None:
        client = Client(protocol, address)
        client.infer(*ask)
        while time.monotonic() < stop:
            try:
                client.infer(*ask)
                counts[c] += 1
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(CLIENTS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start), len(errors)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeat", type=int, default=30, help="latency rounds (30)")
    p.add_argument("--seconds", type=float, default=20.0, help="per throughput run (20)")
    p.add_argument("--protocol", default="http", choices=["http", "grpc"])
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per session")
    args = p.parse_args()

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = export_with_free_batch(seeded(ResNet18()), x, os.path.join(folder, "resnet18.onnx"))
        started = time.monotonic()
        process, rest, grpc_address = start_server(path, args)
        ready = time.monotonic() - started
        address = grpc_address if args.protocol == "grpc" else rest
        try:
            client = Client(args.protocol, address)
            logits = client.infer("resnet18", {"x": x}, ["y"])["y"].ravel()
            top = np.argsort(-logits)[:K_ROWS].astype(np.int64)
            asks = requests(x, top)
            times = latencies(client, asks, args.repeat)
            rates = {
                name: throughput(args.protocol, address, asks[name], args.seconds)
                for name in list(asks)[:2]
            }
        finally:
            process.terminate()
            process.wait(30)

    print(
        f"\nonnxscope serve, ResNet-18 at 224², {args.device}, {args.protocol} binary tensors; "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, ONNX Runtime "
        f"{ort.__version__}; server ready in {ready:.0f} s (rewrite and sessions)\n"
    )
    plain = np.median(times["plain infer"])
    print(f"| request | p50 ms | p99 ms | p50 / plain | req/s, {CLIENTS} clients |")
    print("|---|---:|---:|---:|---:|")
    for name, t in times.items():
        rate, errors = rates.get(name, (None, 0))
        rate = "-" if rate is None else f"{rate:.1f}" + (f" ({errors} errors)" if errors else "")
        p50, p99 = np.percentile(t, [50, 99]) * 1e3
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {np.median(t) / plain:.2f}x | {rate} |")
    votes = np.median(times[VOTES]) / plain
    print(f"\nvotes / plain (p50): {votes:.2f}x (goal: <= 3x); {args.repeat} rounds each")


if __name__ == "__main__":
    main()
