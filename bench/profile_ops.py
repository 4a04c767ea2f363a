"""Where the time goes, op type by op type: ONNX Runtime's profiler on the plain model and on
onnxscope's mask, linear and adjoint graphs, for the suite's networks (bench/nets.py):

    .venv/bin/python bench/profile_ops.py [--nets mobilenetv3,lraspp256] [--k 16] [--runs 20]
                                          [--threads 1] [--top 12]

For each network: the plain model at batch 1 beside the mask graph, and the plain model at batch K
beside the linear and adjoint graphs on K probes. Each graph runs in its own profiled session
(the options onnxscope's sessions use, graph optimizations on, so ORT's blocked NCHWc layout and
its fusions are in place); the kernel time of every node is summed by op type and divided by the
number of runs. Printed per graph: its median wall time over the plain model's, then the op types
that take the most time with their node counts, beside the plain model's. ReorderInput and
ReorderOutput are ORT's moves into and out of its blocked layout.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nets import BENCH_NETS, export_with_free_batch, seeded  # noqa: E402

import onnxscope  # noqa: E402
from onnxscope.runtime.sessions import ort, session_options  # noqa: E402


def profiled(make, run, args, prefix: str):
    """(median wall ms, {op type: (kernel ms per run, nodes)}) of args.runs runs of a fresh
    profiled session (`make(options)`), after two warm-up runs (profiled too: the sums are
    divided by every run)."""
    runs = args.runs
    opts = session_options(True, threads=args.threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = prefix
    session = make(opts)
    for _ in range(2):
        run(session)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(session)
        times.append(time.perf_counter() - start)
    with open(session.end_profiling()) as f:
        events = json.load(f)
    total, count = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"].get("op_name", "?")
            total[op] += event["dur"]
            count[op] += 1
    calls = runs + 2
    ops = {op: (total[op] / calls / 1e3, count[op] // calls) for op in total}
    return 1e3 * float(np.median(times)), ops


def show(title: str, plain, graph, top: int) -> None:
    (plain_ms, plain_ops), (ms, ops) = plain, graph
    print(f"  {title}: {ms:.2f} ms, {ms / plain_ms:.2f}x the plain model ({plain_ms:.2f} ms)")
    print(f"    {'op type':24s} {'ms':>9s} {'nodes':>5s}   {'plain ms':>9s} {'nodes':>5s}")
    for op in sorted(ops, key=lambda o: -ops[o][0])[:top]:
        (op_ms, nodes), (plain_op_ms, plain_nodes) = ops[op], plain_ops.get(op, (0.0, 0))
        print(f"    {op:24s} {op_ms:9.2f} {nodes:5d}   {plain_op_ms:9.2f} {plain_nodes:5d}")


def profile_net(name: str, args, tmp: str) -> None:
    ctor, size, _ = BENCH_NETS[name]
    torch.manual_seed(0)
    net = seeded(ctor())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    path = export_with_free_batch(net, x, os.path.join(tmp, f"{name}.onnx"))
    scope = onnxscope.LinearScope(onnx.load(path), threads=args.threads, probe_batch=args.k)
    it = scope.interpret(x)
    arts = scope.artifacts({"x": x.shape})
    masks = it.masks
    k = args.k
    xs = rng.standard_normal((k, *x.shape[1:])).astype(np.float32)
    z = rng.standard_normal((k, *x.shape)).astype(np.float32)
    w = {
        p: rng.standard_normal((k, *it.outputs[o].shape)).astype(np.float32)
        for o, p in arts.adjoint_probes.items()
    }

    def plain(feed):
        return profiled(
            lambda o: ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]),
            lambda s: s.run(None, {"x": feed}),
            args,
            os.path.join(tmp, f"{name}-plain"),
        )

    def graph(model, feeds, imports, role):
        feeds = {**feeds, **{lin: masks[mask] for lin, mask in imports.items() if mask in masks}}
        feeds.update({lin: it.outputs[mask] for lin, mask in imports.items() if mask in it.outputs})
        return profiled(
            lambda o: arts.weights.session(model, lambda: o, ["CPUExecutionProvider"]),
            lambda s: s.run(None, feeds),
            args,
            os.path.join(tmp, f"{name}-{role}"),
        )

    print(f"== {name} {list(x.shape)} -> {list(it.output.shape)}, {len(masks)} mask outputs")
    show("mask graph", plain(x), graph(arts.mask, {"x": x}, {}, "mask"), args.top)
    plain_k = plain(xs)
    linear = graph(arts.linear, {arts.probe: z}, arts.linear_imports, "linear")
    show(f"linear graph, {k} probes", plain_k, linear, args.top)
    if arts.adjoint is not None:
        adjoint = graph(arts.adjoint, w, arts.adjoint_imports, "adjoint")
        show(f"adjoint graph, {k} probes", plain_k, adjoint, args.top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default=",".join(BENCH_NETS))
    p.add_argument("--k", type=int, default=16, help="probes per run of the linear and adjoint")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--top", type=int, default=12, help="op types shown per graph")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets.split(","):
            profile_net(name, args, tmp)


if __name__ == "__main__":
    main()
