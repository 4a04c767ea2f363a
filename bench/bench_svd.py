"""Top singular triplets of A_x: how long `Interpretation.svd` takes, and how exact its triplets
are (the residual ‖A v − s u‖ / s of each, from one more linear probe per triplet).

    .venv/bin/python bench/bench_svd.py [--k 5] [--repeat 3]

ResNet-18 at 224² (1000 classes: the matrix-free path, ARPACK on the adjoint and linear graphs)
and a 32×32 crop of a U-Net at 128² (input and output crops: 3072 × 1024, ARPACK too); each after
one interpretation, seeded weights, 2 threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nets import BENCH_NETS, export_with_free_batch, seeded  # noqa: E402
from timing import cpu_name, loadavg  # noqa: E402

import onnxscope  # noqa: E402


def residuals(it, name, svd, input_region, output_region) -> float:
    """The largest ‖A v_i − s_i u_i‖ / s_i over the triplets."""
    from onnxscope.runtime.spectrum import linear_operator

    op = linear_operator(it, name, input_region, output_region)
    k = len(svd.s)
    av = op.matmat(svd.Vt.reshape(k, -1).T)  # [m, k]
    su = svd.U.reshape(k, -1).T * svd.s
    return float(np.max(np.linalg.norm(av - su, axis=0) / svd.s))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    import torch

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores), load {loadavg()}")
    cases = [("resnet18", None, None), ("unet128", 32, 32)]
    with tempfile.TemporaryDirectory() as tmp:
        for net, h, w in cases:
            make, size, _ = BENCH_NETS[net]
            x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
            torch.manual_seed(0)  # the same weights every run
            path = export_with_free_batch(seeded(make()), x, os.path.join(tmp, f"{net}.onnx"))
            it = onnxscope.LinearScope(path).interpret(x)
            name = it.output_names[0]
            if h is None:
                regions = (None, None)
            else:
                y0 = (size - h) // 2
                crop = (slice(None), slice(None), slice(y0, y0 + h), slice(y0, y0 + w))
                regions = (crop, crop)
            it.svd(1, name, input_region=regions[0], output_region=regions[1])  # warm-up
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                found = it.svd(args.k, name, input_region=regions[0], output_region=regions[1])
                times.append(time.perf_counter() - start)
            worst = residuals(it, name, found, *regions)
            what = "whole map" if h is None else f"{h}x{w} crop of input and output"
            print(
                f"{net} {size}², {what}: top {args.k} in {np.median(times):.2f} s (median of "
                f"{args.repeat}), s = {np.array2string(found.s, precision=4)}, "
                f"max residual ‖Av − su‖/s {worst:.1e}"
            )


if __name__ == "__main__":
    main()
