"""How rewrite time grows with the node count: a chain of Conv(1x1) -> Relu -> Add(bias) -> Relu
blocks (four nodes each, shared weights; the linear graph folds the two Relu gains of each block
into one factor) cut at several lengths, timed through the analysis run and `rewrite()`
separately (one call each: the point is the growth, not the last millisecond):

    .venv/bin/python bench/bench_rewrite_scale.py [--nodes 10000,20000,50000] [--validate]
                                                   [--json results.json]

`--validate` also times `Artifacts.validate()` (the ONNX checker and one ONNX Runtime session per
graph, what `onnxscope rewrite` runs before writing). A linear rewrite keeps seconds per 10k
nodes about constant across the lengths; a quadratic one doubles it with each doubling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from onnxscope.graph.model import AnalyzedModel  # noqa: E402
from onnxscope.rewrite.driver import rewrite  # noqa: E402

CHANNELS, SIZE = 4, 4


def chain_model(nodes: int) -> onnx.ModelProto:
    """x [1, C, S, S] through `nodes` nodes cycling Conv 1x1 (shared W), Relu, Add (shared bias),
    Relu."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((CHANNELS, CHANNELS, 1, 1)) / CHANNELS).astype(np.float32)
    bias = rng.standard_normal((1, CHANNELS, 1, 1)).astype(np.float32) * 0.1
    made, prev = [], "x"
    for i in range(nodes):
        kind = ("Conv", "Relu", "Add", "Relu")[i % 4]
        out = f"t{i}"
        inputs = {"Conv": [prev, "W"], "Add": [prev, "B"], "Relu": [prev]}[kind]
        made.append(helper.make_node(kind, inputs, [out], name=f"n{i}"))
        prev = out
    shape = [1, CHANNELS, SIZE, SIZE]
    graph = helper.make_graph(
        made,
        "chain",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(prev, onnx.TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def measure(nodes: int, validate: bool) -> dict:
    model = chain_model(nodes)
    start = time.perf_counter()
    analyzed = AnalyzedModel(model, {"x": (1, CHANNELS, SIZE, SIZE)})
    analyzed.info  # noqa: B018  (the analysis run)
    analysis_s = time.perf_counter() - start
    start = time.perf_counter()
    artifacts = rewrite(analyzed, "x")
    rewrite_s = time.perf_counter() - start
    row = {"nodes": nodes, "analysis_s": round(analysis_s, 2), "rewrite_s": round(rewrite_s, 2)}
    if validate:
        start = time.perf_counter()
        artifacts.validate()
        row["validate_s"] = round(time.perf_counter() - start, 2)
    row["rewrite_s_per_10k"] = round(rewrite_s / nodes * 1e4, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="10000,20000,50000")
    parser.add_argument("--validate", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for n in [int(v) for v in args.nodes.split(",")]:
        rows.append(measure(n, args.validate))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
