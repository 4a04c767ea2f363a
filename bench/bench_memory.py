"""Peak memory of onnxscope on a model with large weights (issue 11, item 12): an MLP of
MatMul -> Add -> Relu layers (width 4096) with about --mb MB of float32 weights, saved in a
temporary folder as a user would have it (inline below 2 GB; --external: onnx external data),
and each of these run in a fresh Python process:

- rewrite:   `onnxscope rewrite MODEL -o DIR` (onnxscope.cli.main)
- interpret: `LinearScope(MODEL).interpret(x)`
- verify:    the same, then `.verify()` on the interpretation

Each process reports its peak RSS (VmHWM); the table gives it, the peak less the baseline (a
process that imports onnxscope and onnxruntime and does nothing), and both as multiples of the
weights' bytes. One copy of the weights plus the baseline is the floor.

    .venv/bin/python bench/bench_memory.py [--mb 600] [--external] [--only rewrite,interpret]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WIDTH = 4096

# each child prints one JSON line: its peak RSS and the seconds the step took
CHILD = textwrap.dedent(
    """
    import json, sys, time
    def peak():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    import numpy as np
    import onnxruntime
    import onnxscope
    from onnxscope.cli import main
    step, model, out = sys.argv[1:4]
    start = time.perf_counter()
    if step == "rewrite":
        assert main(["rewrite", model, "-o", out]) == 0
    elif step != "baseline":
        x = np.random.default_rng(0).standard_normal((1, WIDTH)).astype(np.float32)
        it = onnxscope.LinearScope(model).interpret(x)
        if step == "verify":
            assert it.verify().ok
    print(json.dumps({"peak": peak(), "seconds": time.perf_counter() - start}))
    """
).replace("WIDTH", str(WIDTH))


def build(folder: str, mb: float, external: bool) -> tuple[str, int]:
    """The MLP's path and the bytes of its weights (the MatMul weights and biases)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    layers = max(1, round(mb * 1e6 / (WIDTH * WIDTH * 4)))
    rng = np.random.default_rng(0)
    nodes, inits, x, nbytes = [], [], "x", 0
    for i in range(layers):
        w = rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / np.float32(np.sqrt(WIDTH))
        b = rng.random(WIDTH, np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nbytes += w.nbytes + b.nbytes
        del w
        nodes += [
            helper.make_node("MatMul", [x, f"W{i}"], [f"u{i}"]),
            helper.make_node("Add", [f"u{i}", f"b{i}"], [f"v{i}"]),
            helper.make_node("Relu", [f"v{i}"], [f"h{i}"]),
        ]
        x = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [1, WIDTH])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = os.path.join(folder, "model.onnx")
    if external:
        onnx.save(model, path, save_as_external_data=True, location="model.data")
    else:
        onnx.save(model, path)
    return path, nbytes


def run_step(step: str, model: str, folder: str) -> dict:
    out = os.path.join(folder, f"out-{step}")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, step, model, out],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=600, help="weights in MB (default 600)")
    parser.add_argument("--external", action="store_true", help="save with onnx external data")
    parser.add_argument("--only", default="rewrite,interpret,verify", help="steps to run")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="onnxscope-bench-memory-")
    try:
        model, nbytes = build(folder, args.mb, args.external)
        base = run_step("baseline", model, folder)["peak"]
        form = "external data" if args.external else "inline"
        print(f"model: {nbytes / 1e6:.0f} MB of weights ({form}); baseline RSS {base / 1e6:.0f} MB")
        print(
            f"{'step':<18}{'peak RSS':>10}{'x weights':>11}{'peak-base':>11}{'x weights':>11}"
            f"{'seconds':>9}"
        )
        for step in args.only.split(","):
            got = run_step(step, model, folder)
            label = "interpret+verify" if step == "verify" else step
            extra = got["peak"] - base
            print(
                f"{label:<18}{got['peak'] / 1e6:>8.0f}MB{got['peak'] / nbytes:>10.2f}x"
                f"{extra / 1e6:>9.0f}MB{extra / nbytes:>10.2f}x{got['seconds']:>9.1f}"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
