"""The reading graphs (onnxscope/rewrite/readings.py) under plain ONNX Runtime, against the
plain model, in one run: what each whole question costs in one session run, and what scope.onnx
costs when a client leaves its probes out (F(x) and c_x only).

    .venv/bin/python bench/bench_readings.py [--net resnet18] [--repeat 20] [--device cpu|cuda]

Each reading is checked against the Python API (`Interpretation`) before it is timed; times are
medians of interleaved rounds (bench/timing.py), ratios against the plain model's run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nets import BENCH_NETS, export_with_free_batch, seeded  # noqa: E402
from timing import cpu_name, loadavg, max_rel, round_robin  # noqa: E402

import onnxscope  # noqa: E402
from onnxscope.serve.models import load  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="resnet18", choices=sorted(BENCH_NETS))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()
    make, size, _ = BENCH_NETS[args.net]
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_with_free_batch(seeded(make()), x, os.path.join(tmp, f"{args.net}.onnx"))
        served = {m.reading or "plain": m for m in load(path, providers=args.device)}
        it = onnxscope.LinearScope(path).interpret(x)
    top = int(np.argmax(it.output))
    classes, rows16 = np.array([top], np.int64), np.arange(16, dtype=np.int64)
    z = np.random.default_rng(1).standard_normal((1, *x.shape)).astype(np.float32)
    scope = served["scope"]
    probe = next(s.name for s in scope.inputs.values() if s.name.startswith("linear/"))
    cases = {
        "plain infer": ("plain", {"x": x}, None),
        "scope, probes left out (F(x), c_x)": ("scope", {"x": x}, None),
        "scope, one probe z (A_x z)": ("scope", {"x": x, probe: z}, None),
        "votes, top class": ("votes", {"x": x, "classes": classes}, "votes"),
        "rows, 16 indices": ("rows", {"x": x, "indices": rows16}, "rows"),
        "columns, one index": ("columns", {"x": x, "indices": classes}, "columns"),
    }
    # each answer against the Python API first
    expected = {
        "votes": it.votes(top)[None],
        "rows": it.rows(rows16),
        "columns": it.columns(classes),
    }
    for label, (reading, feeds, name) in cases.items():
        got = served[reading].infer(feeds)
        if name is not None:
            err = max_rel(got[name], expected[name])
            assert err < 1e-5, f"{label}: {err:.2e} from the Python API"
    fns = {
        label: (lambda m=served[r], f=f: m.infer(f)) for label, (r, f, _) in cases.items()
    }
    times, skipped = round_robin(fns, args.repeat)
    plain = float(np.median(times["plain infer"]))
    print(f"{args.net} at {size}x{size}, {args.device}, {cpu_name()}, load {loadavg()}")
    print(f"{'request (one ONNX Runtime run)':38s} {'median ms':>10s} {'x plain':>8s}")
    for label, values in times.items():
        t = float(np.median(values))
        print(f"{label:38s} {1e3 * t:10.1f} {t / plain:8.2f}")
    for label, why in skipped.items():
        print(f"{label}: not run ({why})")


if __name__ == "__main__":
    main()
