"""The benchmark suite: onnxscope's runtime path against the plain model and against torch.func,
on one device, in one run:

    .venv/bin/python bench/suite.py [--device cpu|cuda] [--nets resnet18,mobilenetv3,unet128]
                                    [--batches 1,16,64] [--k 16] [--repeat 5] [--threads N]
                                    [--json results.json] [--quick]

For each network (bench/nets.py: ResNet-18 and MobileNetV3-Small at 224², a U-Net at 128²; legacy
export at opset 17 with a free batch axis; the same weights on both sides) it times, as medians of
interleaved rounds (bench/timing.py):

- the plain model in ONNX Runtime at batch 1 and at each batch B;
- the mask pass, `scope.interpret(x)`;
- the linear graph (`it.apply`) and the adjoint graph (`it.apply_T`) on B probes in one run;
- K rows (`it.rows`) and K columns (`it.columns`) with the automatic probe batch;
- torch.func on the same module and device: jvp per column (looped, and vmapped in chunks of K),
  vjp per row (one linearization, then looped or vmapped pullbacks), jacrev with chunking.

Ratios are the headline (absolute times come with the machine's description), from the medians
and from the best round of each quantity (on a shared VM whose host takes CPU time away, the best
round is the least disturbed one): mask pass over one plain forward; linear and adjoint probes
per probe over the plain model's per-image time at the same batch; torch.func's best time per row
or column over onnxscope's. Mask memory is the bytes of every frozen decision, and per on/off
unit. The JSON file has every number.
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
import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nets import BENCH_NETS, export_with_free_batch, seeded  # noqa: E402
from timing import cpu_name, loadavg, max_rel, round_robin  # noqa: E402

import onnxscope  # noqa: E402
from onnxscope.runtime.sessions import (  # noqa: E402
    make_session,
    ort,
    resolve_providers,
    session_options,
)

TARGETS = {  # quantity: (comparison, bound) from issue 6
    "mask_pass_x_plain": ("<=", 1.2),
    "linear_b16_x_plain_b16": ("<=", 1.0),
    "adjoint_b16_x_plain_b16": ("<=", 1.5),
    "rows_speedup_vs_torch": (">=", 3.0),
    "columns_speedup_vs_torch": (">=", 3.0),
    "mask_bytes_per_onoff_unit": ("<=", 1.0),
}
PIECEWISE_LINEAR = {"resnet18", "unet128"}  # A_x = the Jacobian there (secant gains elsewhere)


def mask_memory(it) -> dict:
    """Bytes of every frozen decision, by kind: on/off units (bool), piece and selection indices
    (integers), gains and frozen values (floats)."""
    out = {"onoff_units": 0, "onoff_bytes": 0, "index_bytes": 0, "float_bytes": 0}
    for value in it.masks.values():
        if value.dtype == np.bool_:
            out["onoff_units"] += value.size
            out["onoff_bytes"] += value.nbytes
        elif np.issubdtype(value.dtype, np.integer):
            out["index_bytes"] += value.nbytes
        else:
            out["float_bytes"] += value.nbytes
    out["total_bytes"] = out["onoff_bytes"] + out["index_bytes"] + out["float_bytes"]
    out["bytes_per_onoff_unit"] = out["onoff_bytes"] / max(out["onoff_units"], 1)
    return out


def central(shape: tuple[int, ...], k: int) -> np.ndarray:
    """k flat indices of a tensor [1, C, H, W] (or [1, N]): a run along the middle row."""
    if len(shape) == 4:
        _, _, h, w = shape
        cols = (w - k) // 2 + np.arange(k) if k <= w else np.arange(k) % w
        return (h // 2) * w + cols
    return np.arange(k) % int(np.prod(shape))


def one_hot(indices: np.ndarray, shape, device) -> torch.Tensor:
    """The test suite's one-hot probes (architectures/torch_models.py) on `device`."""
    from architectures import torch_models  # samples/ is on the path (bench/nets.py puts it there)

    return torch.from_numpy(torch_models.one_hot(indices, shape)).to(device)


def bench_net(name: str, args, device: str) -> dict:
    ctor, size, kind = BENCH_NETS[name]
    torch.manual_seed(0)
    net = seeded(ctor())
    for param in net.parameters():  # an inference model: derivatives with respect to x only
        param.requires_grad_(False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    tdev = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
    if tdev == "cuda":  # full float32 on both sides (ORT runs with use_tf32=0): torch's cuDNN
        # convolutions default to TF32, which flipped near-tie decisions on an H200 (3e-2 rows)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    sync = torch.cuda.synchronize if tdev == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_with_free_batch(net, x, os.path.join(tmp, f"{name}.onnx"))
        with open(path, "rb") as f:
            model_bytes = f.read()
    providers, threads = resolve_providers(device), args.threads
    opts = session_options(threads=threads)
    scope = onnxscope.LinearScope(
        onnx.load_from_string(model_bytes), providers=providers, threads=threads
    )
    t0 = time.perf_counter()
    it = scope.interpret(x)
    setup_s = time.perf_counter() - t0
    auto_batch = it.batch
    errors = it.verify()
    out_shape = it.output.shape

    k = args.k
    rows_idx, cols_idx = central(out_shape, k), central(x.shape, k)
    batches = args.batches
    xs = {b: rng.standard_normal((b, *x.shape[1:])).astype(np.float32) for b in batches}
    zs = {b: rng.standard_normal((b, *x.shape)).astype(np.float32) for b in batches}
    ws = {b: rng.standard_normal((b, *out_shape)).astype(np.float32) for b in batches}

    # One session (and one interpretation) per batch size: ONNX Runtime's CUDA provider re-plans a
    # session whenever its input shape changes, so each quantity keeps its own fixed shape.
    plains = {b: make_session(model_bytes, opts, providers) for b in {1, *batches}}
    fixed = {}
    for b in batches:
        scope_b = onnxscope.LinearScope(
            onnx.load_from_string(model_bytes), providers=providers, probe_batch=b, threads=threads
        )
        fixed[b] = scope_b.interpret(x)

    fns = {
        "plain_b1": lambda: plains[1].run(None, {"x": x}),
        "mask_pass": lambda: scope.interpret(x),
    }
    for b in batches:
        fns[f"plain_b{b}"] = lambda b=b: plains[b].run(None, {"x": xs[b]})
        fns[f"linear_b{b}"] = lambda b=b: fixed[b].apply(zs[b])
        fns[f"adjoint_b{b}"] = lambda b=b: fixed[b].apply_T(ws[b])
    fns["rows"] = lambda: it.rows(rows_idx)
    fns["columns"] = lambda: it.columns(cols_idx)

    # torch.func on the same module, weights and device
    net = net.to(tdev)
    xt = torch.from_numpy(x).to(tdev)
    e_out, e_in = one_hot(rows_idx, out_shape, tdev), one_hot(cols_idx, x.shape, tdev)

    def timed(fn):
        def run():
            out = fn()
            sync()
            return out

        return run

    def torch_forward():
        with torch.no_grad():
            net(xt)

    pullback = torch.func.vjp(net, xt)[1]
    tangent = lambda t: torch.func.jvp(net, (xt,), (t,))[1]  # noqa: E731
    torch_fns = {
        "torch_forward_b1": torch_forward,
        "torch_vjp_setup": lambda: torch.func.vjp(net, xt),
        "torch_vjp_loop": lambda: [pullback(e_out[i])[0] for i in range(k)],
        "torch_vjp_vmap": lambda: torch.vmap(pullback, chunk_size=k)(e_out)[0],
        "torch_jacrev": lambda: torch.func.jacrev(
            lambda v: net(v).flatten()[torch.from_numpy(rows_idx).to(tdev)], chunk_size=k
        )(xt),
        "torch_jvp_loop": lambda: [tangent(e_in[j]) for j in range(k)],
        "torch_jvp_vmap": lambda: torch.vmap(tangent, chunk_size=k)(e_in),
    }
    fns.update({key: timed(fn) for key, fn in torch_fns.items()})
    samples, skipped = round_robin(fns, args.repeat)
    t = {key: float(np.median(v)) for key, v in samples.items()}
    best = {key: float(min(v)) for key, v in samples.items()}
    spread = {key: float((max(v) - min(v)) / t[key]) for key, v in samples.items()}
    memory = mask_memory(it)
    ratios = ratios_of(t, batches, memory)
    best_ratios = ratios_of(best, batches, memory)

    agreement = {}
    if name in PIECEWISE_LINEAR:  # both sides compute the same Jacobian rows and columns
        ours_rows = it.rows(rows_idx)
        theirs = torch.stack([pullback(e_out[i])[0] for i in range(k)]).cpu().numpy()
        agreement["rows_vs_vjp"] = max_rel(ours_rows, theirs.reshape(ours_rows.shape))
        ours_cols = it.columns(cols_idx)
        theirs = torch.stack([tangent(e_in[j]) for j in range(k)]).cpu().numpy()
        agreement["columns_vs_jvp"] = max_rel(ours_cols, theirs.reshape(ours_cols.shape))
    return {
        "net": name,
        "kind": kind,
        "input": list(x.shape),
        "output": list(out_shape),
        "setup_s": setup_s,
        "auto_probe_batch": auto_batch,
        "exactness": {
            k: float(errors[k]) for k in ("reconstruction", "linearity", "adjoint") if k in errors
        },
        "agreement_with_torch": agreement,
        "median_s": t,
        "best_s": best,
        "spread": spread,
        "skipped": skipped,
        "ratios": ratios,
        "best_ratios": best_ratios,
        "rows_per_s": k / t["rows"],
        "columns_per_s": k / t["columns"],
        "mask_memory": memory,
        "providers": it._s.mask.get_providers(),
    }


def ratios_of(t: dict, batches: list[int], memory: dict) -> dict:
    """The headline ratios from one set of times (medians, or the best of the rounds)."""
    ratios = {"mask_pass_x_plain": t["mask_pass"] / t["plain_b1"]}
    for b in batches:
        ratios[f"linear_b{b}_x_plain_b{b}"] = t[f"linear_b{b}"] / t[f"plain_b{b}"]
        ratios[f"adjoint_b{b}_x_plain_b{b}"] = t[f"adjoint_b{b}"] / t[f"plain_b{b}"]
    torch_rows = [
        t[key] for key in ("torch_vjp_loop", "torch_vjp_vmap", "torch_jacrev") if key in t
    ]
    torch_cols = [t[key] for key in ("torch_jvp_loop", "torch_jvp_vmap") if key in t]
    if torch_rows:
        ratios["rows_speedup_vs_torch"] = min(torch_rows) / t["rows"]
    if torch_cols:
        ratios["columns_speedup_vs_torch"] = min(torch_cols) / t["columns"]
    ratios["mask_bytes_per_onoff_unit"] = memory["bytes_per_onoff_unit"]
    return ratios


def verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    ok = value <= bound if op == "<=" else value >= bound
    return f"{'met' if ok else 'MISSED'} (target {op} {bound:g})"


def print_report(machine: dict, results: list[dict]) -> None:
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores; {machine['device']}; "
        f"onnxruntime {machine['onnxruntime']}, torch {machine['torch']}; "
        f"load average {machine['load_start']} (start) / {machine['load_end']} (end)"
    )
    for r in results:
        t = r["median_s"]
        print(
            f"\n== {r['net']} {r['kind']} {r['input']} -> {r['output']} on {r['providers'][0]}; "
            f"setup {r['setup_s']:.2f} s; auto probe batch {r['auto_probe_batch']}"
        )
        print(
            "exactness: "
            + ", ".join(f"{n} {v:.1e}" for n, v in r["exactness"].items())
            + (
                "; vs torch: "
                + ", ".join(f"{n} {v:.1e}" for n, v in r["agreement_with_torch"].items())
                if r["agreement_with_torch"]
                else ""
            )
        )
        print(f"  {'quantity':34s} {'median ms':>10s} {'best ms':>10s} {'spread':>7s}")
        for key, value in t.items():
            best = 1e3 * r["best_s"][key]
            print(f"  {key:34s} {1e3 * value:10.2f} {best:10.2f} {r['spread'][key]:7.0%}")
        for key, why in r["skipped"].items():
            print(f"  {key:34s} not run: {why}")
        print(f"  rows/s {r['rows_per_s']:.1f}, columns/s {r['columns_per_s']:.1f}")
        m = r["mask_memory"]
        print(
            f"  masks: {m['total_bytes'] / 1e6:.2f} MB ({m['onoff_units']} on/off units in "
            f"{m['onoff_bytes'] / 1e6:.2f} MB, indices {m['index_bytes'] / 1e6:.2f} MB, "
            f"floats {m['float_bytes'] / 1e6:.2f} MB)"
        )
        print(f"  {'ratio':34s} {'medians':>10s} {'bests':>10s}")
        for key, value in r["ratios"].items():
            best = r["best_ratios"][key]
            print(f"  {key:34s} {value:10.2f} {best:10.2f}  {verdict(key, value)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--nets", default=",".join(BENCH_NETS))
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--k", type=int, default=16, help="rows and columns to compute")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="ORT and torch threads (0: default)")
    p.add_argument("--json", default=None, help="write every number to this JSON file")
    p.add_argument("--quick", action="store_true", help="batches 1,16 and 3 rounds")
    args = p.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.quick:
        args.batches, args.repeat = [b for b in args.batches if b <= 16], 3
    if 16 not in args.batches:
        args.batches.append(16)
    args.threads = args.threads or None
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_start": loadavg(),
    }
    if args.device == "cuda" and torch.cuda.is_available():
        machine["device"] = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        machine["device"] = "CPU"
    results = [bench_net(name, args, args.device) for name in args.nets.split(",")]
    machine["load_end"] = loadavg()
    print_report(machine, results)
    if args.json:
        with open(args.json + ".partial", "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=2)
        os.replace(args.json + ".partial", args.json)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
