"""The mask pass of a chain of Conv + unit layers against the plain model, per unit: what each
unit's decision costs on top of its forward (ONNX Runtime fuses Conv with Relu, LeakyRelu, Clip
and HardSigmoid in the plain model; a decision read on the unit's input breaks that fusion, one
read on its output keeps it).

    .venv/bin/python bench/bench_mask_units.py [--layers 8] [--size 112] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from helpers import make_model  # noqa: E402

import onnxscope  # noqa: E402

UNITS = {
    "Relu": "{y} = Relu({u})",
    "LeakyRelu": "{y} = LeakyRelu <alpha=0.1> ({u})",
    "Clip (ReLU6)": "{y} = Clip({u}, lo, hi)",
    "HardSigmoid": "{y} = HardSigmoid({u})",
    "HardSwish": "{y} = HardSwish({u})",
}


def chain(unit: str, layers: int, size: int):
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], {"lo": np.float32(0), "hi": np.float32(6)}, "x"
    for i in range(layers):
        inits[f"W{i}"] = (0.2 * rng.standard_normal((32, 32 if i else 3, 3, 3))).astype("f4")
        inits[f"B{i}"] = rng.standard_normal(32).astype(np.float32)
        nodes += [f"c{i} = Conv <pads=[1,1,1,1]> ({prev}, W{i}, B{i})",
                  UNITS[unit].format(y=f"r{i}", u=f"c{i}")]  # fmt: skip
        prev = f"r{i}"
    return make_model(nodes, {"x": (1, 3, size, size)}, inits=inits, opset=17)


def median_ms(fn, repeat: int = 30) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    x = np.random.default_rng(1).standard_normal((1, 3, args.size, args.size)).astype("f4")
    print(f"{'unit':14s} {'plain ms':>9s} {'mask ms':>8s} {'ratio':>6s}  verify")
    for unit in UNITS:
        model = chain(unit, args.layers, args.size)
        it = onnxscope.LinearScope(model, threads=args.threads).interpret(x)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        plain = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
        t_plain = median_ms(lambda plain=plain: plain.run(None, {"x": x}))
        t_mask = median_ms(lambda it=it: it._s.mask.run(None, {"x": x}))
        print(f"{unit:14s} {t_plain:9.2f} {t_mask:8.2f} {t_mask / t_plain:6.2f}  {it.verify().ok}")


if __name__ == "__main__":
    main()
