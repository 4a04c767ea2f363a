"""Benchmark of the rewriter core: ResNet-18 at 224x224 on ONNX Runtime (CPU).

Prints the mask pass and a batch of 16 probes through the linear graph as ratios to the plain
model's forward pass, all with the same session options, in one run:

    .venv/bin/python bench/bench_core.py [--size 224] [--repeat 10] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, os.path.dirname(__file__))
from nets import ResNet18, export_with_free_batch, seeded  # noqa: E402

import onnxscope  # noqa: E402
from onnxscope.runtime import session_options  # noqa: E402


def median_time(fn, repeat: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--probes", type=int, default=16)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()

    torch.manual_seed(0)
    net = seeded(ResNet18())
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "resnet18.onnx")
        export_with_free_batch(net, x, path)
        opts = session_options(threads=args.threads or None)
        plain = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        scope = onnxscope.LinearScope(path, probe_batch=args.probes)
        t0 = time.perf_counter()
        it = scope.interpret(x)
        rewrite_s = time.perf_counter() - t0
        errors = it.verify()
        sessions = scope._prepare({"x": x.shape})[1]
        probes = np.random.default_rng(1).standard_normal((args.probes, *x.shape[1:]))
        probes = probes.astype(np.float32).reshape(args.probes, *x.shape)
        xb = probes.reshape(args.probes, *x.shape[1:])
        t_plain = median_time(lambda: plain.run(None, {"x": x}), args.repeat)
        t_plain_b = median_time(lambda: plain.run(None, {"x": xb}), args.repeat)
        t_mask = median_time(lambda: sessions.mask.run(None, {"x": x}), args.repeat)
        t_interp = median_time(lambda: scope.interpret(x), args.repeat)
        t_lin = median_time(lambda: it.apply(probes), args.repeat)

    k = args.probes
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"onnxruntime {ort.__version__}, threads={args.threads or 'default'}"
    )
    print(f"model: ResNet-18 at {args.size}x{args.size}; rewrite + session setup {rewrite_s:.2f} s")
    print(
        f"exactness: reconstruction {errors['reconstruction']:.2e}, "
        f"linearity {errors['linearity']:.2e}"
    )
    rows = [
        ("plain forward, batch 1", t_plain, 1.0),
        (f"plain forward, batch {k} (per image)", t_plain_b / k, t_plain_b / k / t_plain),
        ("mask pass (mask graph run)", t_mask, t_mask / t_plain),
        ("interpret(x) (mask pass + OrtValue setup)", t_interp, t_interp / t_plain),
        (f"linear graph, {k} probes (per probe)", t_lin / k, t_lin / k / t_plain),
    ]
    print(f"{'quantity':45s} {'ms':>9s} {'x plain b1':>11s}")
    for name, t, ratio in rows:
        print(f"{name:45s} {1e3 * t:9.2f} {ratio:11.2f}")
    print(f"linear {k} probes vs plain batch {k}: {t_lin / t_plain_b:.2f}x")


if __name__ == "__main__":
    main()
