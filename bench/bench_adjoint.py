"""Benchmark of the transposed interpreter: rows A_x^T e_i and columns A_x e_j of ResNet-18 at
224x224, through onnxscope (ONNX Runtime, CPU) and through torch.func on the same architecture
and weights, in one run:

    .venv/bin/python bench/bench_adjoint.py [--size 224] [--rows 32] [--repeat 5] [--threads N]
                                            [--json results.json]

Every time is the median over --repeat interleaved rounds (one call of each quantity per round,
after one warm-up call of each, with a short idle pause before each call), and is also given as a
ratio to one plain ONNX Runtime forward pass of the exported model (batch 1, the session options
onnxscope uses, timed as K back-to-back passes). onnxscope rows go through the adjoint graph in
batches of --probe-batch (16); torch rows are vector-Jacobian products (torch.func.vjp: one
linearization at x, then one pullback per one-hot cotangent; also vmap-batched, and jacrev over
the first K outputs), torch columns are Jacobian-vector products (torch.func.jvp, looped and
vmap-batched). Both sides compute A_x = the Jacobian at x of this ReLU/MaxPool network; the script
prints how far apart they are and lists every frozen decision where ORT's float32 evaluation and
torch's differ (a near-tie flipped by rounding), which is what any difference above 1e-6 means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

sys.path.insert(0, os.path.dirname(__file__))
from nets import ResNet18, export_with_free_batch, seeded  # noqa: E402
from timing import cpu_name, loadavg, max_rel, round_robin  # noqa: E402

import onnxscope  # noqa: E402
from onnxscope.runtime.sessions import session_options  # noqa: E402


class _Decisions(TorchFunctionMode):
    """Record torch's own ReLU and MaxPool decisions at x, in call order (ReLU: u > 0; MaxPool:
    the flat N·C·H·W index each window selected, first maximum on ties), with the values."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, np.ndarray, np.ndarray]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (F.relu, torch.relu):
            u = args[0]
            self.found.append(("Relu", (u > 0).numpy(), u.numpy()))
        elif func is F.max_pool2d:
            u = args[0]
            kw = {**kwargs, "return_indices": True}
            _, idx = F.max_pool2d(*args, **kw)
            n, c, h, w = u.shape
            base = (torch.arange(n * c).reshape(n, c, 1, 1) * h * w).to(idx.dtype)
            self.found.append(("MaxPool", (idx + base).numpy(), u.numpy()))
        return out


def decision_mismatches(net, xt: torch.Tensor, masks: dict[str, np.ndarray]) -> list[str]:
    """Frozen decisions where onnxscope (ORT's float32 evaluation of the exported graph) and
    torch's eval forward disagree at x: a near-tie (ReLU input within rounding of 0, two MaxPool
    candidates within rounding of each other) can go either way, and then A_x is the Jacobian of
    the one evaluation but not of the other. Matched by order, ReLU/MaxPool masks only."""
    mode = _Decisions()
    with torch.no_grad(), mode:
        net(xt)
    ours = [
        (n, m)
        for n, m in masks.items()
        if ("Relu" in n and m.dtype == bool) or ("MaxPool" in n and m.dtype == np.int64)
    ]
    if len(ours) != len(mode.found) or any(
        m.shape != t.shape for (_, m), (_, t, _) in zip(ours, mode.found)
    ):
        return [f"could not match {len(ours)} onnxscope masks to {len(mode.found)} torch units"]
    out = []
    for (name, mine), (kind, theirs, u) in zip(ours, mode.found):
        for pos in np.argwhere(mine != theirs)[:3]:
            pos = tuple(int(i) for i in pos)
            if kind == "Relu":
                out.append(f"{name}{list(pos)}: torch input {u[pos]:.3e}")
            else:
                a, b = int(theirs[pos]), int(mine[pos])
                out.append(
                    f"{name}{list(pos)}: torch picks flat element {a} ({u.flat[a]:.9g}), ORT "
                    f"picks {b} (torch's value there {u.flat[b]:.9g}, "
                    f"difference {u.flat[a] - u.flat[b]:.1e})"
                )
        extra = int((mine != theirs).sum()) - 3
        if extra > 0:
            out.append(f"{name}: {extra} more")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rows", type=int, default=32, help="K: rows (and columns) to compute")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--probe-batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op and torch threads")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()
    k, pb = args.rows, args.probe_batch
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = loadavg()

    torch.manual_seed(0)
    net = seeded(ResNet18())
    for param in net.parameters():  # an inference model: gradients with respect to x only
        param.requires_grad_(False)
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    xt = torch.from_numpy(x)
    out_size = 1000

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "resnet18.onnx")
        export_with_free_batch(net, x, path)
        opts = session_options(threads=args.threads or None)
        plain = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        scope = onnxscope.LinearScope(path, probe_batch=pb)
        t0 = time.perf_counter()
        it = scope.interpret(x)
        setup_s = time.perf_counter() - t0
        errors = it.verify()
        ort_threads = plain.get_session_options().intra_op_num_threads

        rows = it.rows(range(k))
        cols = it.columns(range(k))
        mismatches = decision_mismatches(net, xt, it.masks)

    # -- torch.func on the same module, eval mode ---------------------------------------------
    onehot_out = torch.eye(k, out_size, dtype=torch.float32).reshape(k, 1, out_size)
    onehot_in = torch.zeros(k, x.size, dtype=torch.float32)
    onehot_in[torch.arange(k), torch.arange(k)] = 1
    onehot_in = onehot_in.reshape(k, *x.shape)

    def torch_forward():
        with torch.no_grad():
            for _ in range(k):
                net(xt)

    def vjp_setup():
        return torch.func.vjp(net, xt)[1]

    pullback = vjp_setup()

    def vjp_loop():
        return [pullback(onehot_out[i])[0] for i in range(k)]

    def vjp_vmap():
        return torch.vmap(pullback, chunk_size=pb)(onehot_out)[0]

    def jacrev_rows():
        return torch.func.jacrev(lambda v: net(v).flatten()[:k], chunk_size=pb)(xt)

    def jvp_loop():
        return [torch.func.jvp(net, (xt,), (onehot_in[j],))[1] for j in range(k)]

    def jvp_vmap():
        tangent = lambda t: torch.func.jvp(net, (xt,), (t,))[1]  # noqa: E731
        return torch.vmap(tangent, chunk_size=pb)(onehot_in)

    samples, skipped = round_robin(
        {
            # K back-to-back forward passes: a baseline as long as the K-row calls, so that
            # clock boost after idle time favours neither side
            "plain": lambda: [plain.run(None, {"x": x}) for _ in range(k)],
            "interpret": lambda: scope.interpret(x),
            "rows": lambda: it.rows(range(k)),
            "columns": lambda: it.columns(range(k)),
            "torch_forward": torch_forward,
            "vjp_setup": vjp_setup,
            "vjp_loop": vjp_loop,
            "vjp_vmap": vjp_vmap,
            "jacrev": jacrev_rows,
            "jvp_loop": jvp_loop,
            "jvp_vmap": jvp_vmap,
        },
        args.repeat,
    )
    for key in ("plain", "interpret", "rows", "columns", "vjp_setup", "vjp_loop"):
        if key in skipped:
            raise SystemExit(f"{key} failed: {skipped[key]}")
    timings = {key: float(np.median(v)) for key, v in samples.items()}
    spread = {key: (max(v) - min(v)) / timings[key] for key, v in samples.items()}

    # -- like for like: both sides compute the same rows and columns ----------------------------
    del samples
    vjp_rows = torch.stack(vjp_loop()).numpy().reshape(k, *x.shape)
    diffs = {"rows_vs_vjp": max_rel(rows, vjp_rows)}
    if "vjp_vmap" not in skipped:
        diffs["vjp_vmap_vs_vjp"] = max_rel(vjp_vmap().numpy().reshape(k, *x.shape), vjp_rows)
    if "jacrev" not in skipped:
        diffs["jacrev_vs_vjp"] = max_rel(jacrev_rows().numpy().reshape(k, *x.shape), vjp_rows)
    if "jvp_loop" not in skipped:
        jvp_cols = torch.stack(jvp_loop()).numpy().reshape(k, 1, out_size)
        diffs["columns_vs_jvp"] = max_rel(cols, jvp_cols)
    if "jvp_vmap" not in skipped and "jvp_loop" in timings:
        diffs["jvp_vmap_vs_jvp"] = max_rel(jvp_vmap().numpy().reshape(k, 1, out_size), jvp_cols)

    # -- report ------------------------------------------------------------------------------------
    t1 = timings["plain"] / k  # one plain ORT forward pass
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} logical cores, load average {load_start} "
        f"(start) / {loadavg()} (end); python {platform.python_version()}, "
        f"onnxruntime {ort.__version__} (intra-op threads {ort_threads or 'default'}), "
        f"torch {torch.__version__} (torch.get_num_threads() = {torch.get_num_threads()})"
    )
    print(
        f"model: ResNet-18 at {args.size}x{args.size}, 1000 outputs; K = {k} rows / columns, "
        f"probe_batch {pb}, median of {args.repeat}; rewrite + sessions {setup_s:.2f} s"
    )
    print(
        "exactness: "
        + ", ".join(f"{name} {value:.2e}" for name, value in errors.items())
        + "; max relative difference: "
        + ", ".join(f"{name} {value:.2e}" for name, value in diffs.items())
    )
    print(
        f"frozen decisions where ORT and torch differ at x: {len(mismatches)}"
        + "".join(f"\n  {line}" for line in mismatches)
    )
    table = []  # (quantity, total s, per item s, (max - min) / median)

    def add(name, key, count):
        if key in timings:
            table.append((name, timings[key], timings[key] / count, spread[key]))

    add(f"ORT plain forward, batch 1, x{k}", "plain", k)
    add("onnxscope interpret(x) (mask pass)", "interpret", 1)
    add(f"onnxscope it.rows(range({k}))", "rows", k)
    add(f"onnxscope it.columns(range({k}))", "columns", k)
    add(f"torch forward (no_grad), batch 1, x{k}", "torch_forward", k)
    add("torch.func.vjp setup (linearize at x)", "vjp_setup", 1)
    add(f"torch.func.vjp pullback loop, {k} rows", "vjp_loop", k)
    add(f"torch.vmap(vjp pullback, chunk {pb}), {k} rows", "vjp_vmap", k)
    add(f"torch.func.jacrev(chunk {pb}), first {k} rows", "jacrev", k)
    add(f"torch.func.jvp loop, {k} columns", "jvp_loop", k)
    add(f"torch.vmap(jvp, chunk {pb}), {k} columns", "jvp_vmap", k)
    print(
        f"{'quantity':48s} {'total ms':>10s} {'per item ms':>12s} {'total/fwd':>10s} "
        f"{'item/fwd':>9s} {'spread':>7s}"
    )
    for name, total, per, sp in table:
        print(
            f"{name:48s} {1e3 * total:10.2f} {1e3 * per:12.2f} {total / t1:10.2f} "
            f"{per / t1:9.2f} {100 * sp:6.0f}%"
        )
    print("(medians of interleaved rounds; spread = (max - min) / median over the rounds)")
    for key, why in skipped.items():
        print(f"skipped {key}: {why}")

    rows_s = k / timings["rows"]
    cols_s = k / timings["columns"]
    headline = {
        "onnxscope_rows_per_s": rows_s,
        "onnxscope_columns_per_s": cols_s,
        "rows_cost_forward_passes": timings["rows"] / t1,
        "row_cost_forward_passes": timings["rows"] / k / t1,
        "columns_cost_forward_passes": timings["columns"] / t1,
        "column_cost_forward_passes": timings["columns"] / k / t1,
        "vjp_rows_per_s": k / timings["vjp_loop"],
        "vjp_rows_per_s_with_setup": k / (timings["vjp_setup"] + timings["vjp_loop"]),
        "rows_speedup_vs_vjp": rows_s / (k / timings["vjp_loop"]),
        "rows_speedup_vs_vjp_with_setup": (k / (timings["interpret"] + timings["rows"]))
        / (k / (timings["vjp_setup"] + timings["vjp_loop"])),
    }
    if "vjp_vmap" in timings:
        headline["rows_speedup_vs_vjp_vmap"] = rows_s / (k / timings["vjp_vmap"])
    if "jacrev" in timings:
        headline["rows_speedup_vs_jacrev"] = rows_s / (k / timings["jacrev"])
    if "jvp_loop" in timings:
        headline["jvp_columns_per_s"] = k / timings["jvp_loop"]
        headline["columns_speedup_vs_jvp"] = cols_s / (k / timings["jvp_loop"])
    if "jvp_vmap" in timings:
        headline["columns_speedup_vs_jvp_vmap"] = cols_s / (k / timings["jvp_vmap"])
    print(
        f"{k} rows cost {headline['rows_cost_forward_passes']:.1f} forward passes "
        f"({headline['row_cost_forward_passes']:.2f} per row); {k} columns cost "
        f"{headline['columns_cost_forward_passes']:.1f} "
        f"({headline['column_cost_forward_passes']:.2f} per column)"
    )
    print(
        f"rows/s: onnxscope {rows_s:.1f}, torch.func.vjp loop {headline['vjp_rows_per_s']:.1f} "
        f"-> onnxscope {headline['rows_speedup_vs_vjp']:.2f}x "
        f"({headline['rows_speedup_vs_vjp_with_setup']:.2f}x counting interpret vs vjp setup)"
        + (
            f"; vs vmap(vjp) {headline['rows_speedup_vs_vjp_vmap']:.2f}x"
            if "rows_speedup_vs_vjp_vmap" in headline
            else ""
        )
        + (
            f"; vs jacrev {headline['rows_speedup_vs_jacrev']:.2f}x"
            if "rows_speedup_vs_jacrev" in headline
            else ""
        )
    )
    if "jvp_loop" in timings:
        print(
            f"columns/s: onnxscope {cols_s:.1f}, torch.func.jvp loop "
            f"{headline['jvp_columns_per_s']:.1f} -> onnxscope "
            f"{headline['columns_speedup_vs_jvp']:.2f}x"
            + (
                f"; vs vmap(jvp) {headline['columns_speedup_vs_jvp_vmap']:.2f}x"
                if "columns_speedup_vs_jvp_vmap" in headline
                else ""
            )
        )

    if args.json:
        result = {
            "machine": {
                "cpu": cpu_name(),
                "logical_cores": os.cpu_count(),
                "loadavg_start": load_start,
                "loadavg_end": loadavg(),
                "python": platform.python_version(),
                "onnxruntime": ort.__version__,
                "ort_intra_op_threads": ort_threads,
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
            },
            "config": {
                "model": "ResNet-18",
                "size": args.size,
                "rows": k,
                "probe_batch": pb,
                "repeat": args.repeat,
                "threads": args.threads,
            },
            "exactness": errors,
            "max_rel_diff": diffs,
            "decision_mismatches": mismatches,
            "seconds": timings,
            "spread": spread,
            "per_forward": {key: t / t1 for key, t in timings.items()},
            "plain_forward_s": t1,
            "headline": headline,
            "skipped": skipped,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
