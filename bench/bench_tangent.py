"""Benchmark of tangent mode: the gradient of one logit (one row A_x^T e_k, with A_x the Jacobian
in tangent mode) through onnxscope (ONNX Runtime, CPU) against torch autograd
(`torch.autograd.grad` of that logit) on the same architecture and weights, in one run:

    .venv/bin/python bench/bench_tangent.py [--nets mobilenetv3,efficientnet] [--size 224]
                                            [--repeat 5] [--threads N] [--json results.json]

Nets with smooth units: MobileNetV3-Small (bench/nets.py: hardswish, squeeze-excite gates with
hardsigmoid) and an EfficientNet-like net (SiLU, squeeze-excite gates with sigmoid: MBConv blocks
of the test suite). Timed, each as the median over --repeat interleaved rounds (bench/timing.py):

- `ort forward`: one plain ONNX Runtime forward pass of the exported model (the unit of time);
- `mask pass`: onnxscope's interpretation at x (the mask graph: F(x) and every derivative);
- `row (adjoint)`: one row through the adjoint graph, given the interpretation;
- `gradient`: onnxscope's whole gradient of one logit at a new x (mask pass + row);
- `secant row`: the same in secant mode (the paper's interpreter), for the cost of the tangent;
- `torch grad`: torch forward with autograd + `torch.autograd.grad(logit_k, x)`.

The script also prints how far onnxscope's row is from torch's gradient (relative L2). On a
shared machine pass --threads 1: with two threads on two busy cores, torch's OpenMP pool spun and
its times varied 40 ms to 1.9 s from call to call here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "samples")]
from architectures.torch_models import MBConv  # noqa: E402
from nets import MobileNetV3Small, export_with_free_batch, seeded  # noqa: E402
from timing import cpu_name, loadavg, round_robin  # noqa: E402

import onnxscope  # noqa: E402
from onnxscope.runtime.sessions import session_options  # noqa: E402


class EfficientNetLike(nn.Module):
    """EfficientNet-B0's first stages at reduced depth: SiLU stem, MBConv blocks (SiLU,
    squeeze-excite with a sigmoid gate), 1x1 head with SiLU, global pool, linear classifier."""

    STAGES = [(16, 1, 1), (24, 6, 2), (24, 6, 1), (40, 6, 2), (80, 6, 2), (112, 6, 1)]

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU()
        )
        blocks, cin = [], 32
        for cout, expand, stride in self.STAGES:
            blocks.append(MBConv(cin, cout, expand, stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(cin, 320, 1, bias=False), nn.BatchNorm2d(320), nn.SiLU()
        )
        self.fc = nn.Linear(320, classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


NETS = {"mobilenetv3": MobileNetV3Small, "efficientnet": EfficientNetLike}


def bench_net(name: str, size: int, repeat: int, threads: int | None, folder: str) -> dict:
    net = seeded(NETS[name]())
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    path = export_with_free_batch(net, x, os.path.join(folder, f"{name}.onnx"))
    plain = ort.InferenceSession(path, session_options(threads=threads), ["CPUExecutionProvider"])
    scope = onnxscope.LinearScope(path, mode="tangent", threads=threads)
    secant = onnxscope.LinearScope(path, threads=threads)
    start = time.perf_counter()
    it = scope.interpret(x)
    build_s = time.perf_counter() - start  # (rewrite + sessions + the first mask pass)
    k = int(np.argmax(it.output))
    xt = torch.from_numpy(x)

    def torch_grad():
        xg = xt.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(xg)[0, k], xg)
        return grad

    fns = {
        "ort forward": lambda: plain.run(None, {"x": x}),
        "mask pass": lambda: scope.interpret(x),
        "row (adjoint)": lambda: it.rows([k]),
        "gradient": lambda: scope.interpret(x).rows([k]),
        "secant row": lambda: secant.interpret(x).rows([k]),
        "torch grad": torch_grad,
    }
    samples, skipped = round_robin(fns, repeat)
    times = {key: float(np.median(v)) for key, v in samples.items()}
    row, grad = it.rows([k])[0], torch_grad().numpy()
    error = float(np.linalg.norm(row - grad) / np.linalg.norm(grad))
    return {
        "net": name,
        "size": size,
        "class": k,
        "build_s": build_s,
        "times_s": times,
        "skipped": skipped,
        "rel_error_vs_torch": error,
        "verify": {key: float(v) for key, v in it.verify().items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated: " + ",".join(NETS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="ORT and torch threads")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.nets.split(","):
            results.append(bench_net(name, args.size, args.repeat, args.threads, folder))
    print(
        f"# {cpu_name()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {ort.__version__}, load {loadavg()}, median of {args.repeat}"
    )
    header = ("net", "quantity", "ms", "× ORT forward", "× torch grad")
    rows = []
    for r in results:
        t = r["times_s"]
        for key, value in t.items():
            rows.append((
                f"{r['net']} {r['size']}²", key, f"{1e3 * value:.1f}",
                f"{value / t['ort forward']:.2f}", f"{value / t['torch grad']:.2f}",
            ))  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for line in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(line, widths)))
    for r in results:
        print(
            f"{r['net']}: onnxscope's row vs torch.autograd.grad: relative L2 "
            f"{r['rel_error_vs_torch']:.2e}; "
            f"verify {r['verify']}; rewrite + sessions + first pass {r['build_s']:.1f} s"
            + (f"; skipped {r['skipped']}" if r["skipped"] else "")
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
