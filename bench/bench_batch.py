"""Batched votes against Captum, and `onnxscope batch` over a folder of images, in one run.

    .venv/bin/python bench/bench_batch.py [--net resnet18] [--n 16] [--repeat 5] [--images 200]
                                          [--engines local,processes,ray] [--device cpu|cuda]

Part 1, N images each with its own target class (ResNet-18 224², seeded weights, free batch):
- onnxscope batched: `scope.interpret(X).votes(targets)`: one mask pass at batch N, one adjoint
  probe carrying a one-hot per sample (A_x is block-diagonal over the batch);
- onnxscope per-image loop: interpret(x_n).votes(t_n) for each n;
- Captum's `InputXGradient(model).attribute(X, target=targets)` (x ⊙ ∇ logit, which for a ReLU
  net equals the votes x ⊙ A_xᵀe_t: checked before timing);
- the plain model's forward at batch N (ONNX Runtime), for scale.
Medians of interleaved rounds (bench/timing.py), torch and ORT on the same cores.

Part 2, `onnxscope batch` (the command's run_batch, verify on) on `--images` PNG files: seconds
per image and images/s for each engine, and the local engine without verify.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nets import BENCH_NETS, export_with_free_batch, seeded  # noqa: E402
from timing import cpu_name, loadavg, max_rel, round_robin  # noqa: E402

import onnxscope  # noqa: E402


def part_votes(args, path, model, X, targets) -> None:
    import onnxruntime as ort
    import torch
    from captum.attr import InputXGradient

    scope = onnxscope.LinearScope(path, providers=args.device)
    n = len(X)
    plain = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    xt = torch.from_numpy(X)
    tt = torch.tensor(targets)
    captum = InputXGradient(model)

    def batched():
        return scope.interpret(X).votes(targets)

    def loop():
        return np.concatenate([scope.interpret(X[k : k + 1]).votes(targets[k]) for k in range(n)])

    def by_captum():
        return captum.attribute(xt.clone().requires_grad_(True), target=tt).detach().numpy()

    ours, theirs, looped = batched(), by_captum(), loop()
    # the exact reference: the same net in float64 (float32 runs may flip a ReLU near 0)
    x64 = torch.from_numpy(X.astype(np.float64)).requires_grad_(True)
    exact = InputXGradient(copy.deepcopy(model).double()).attribute(x64, target=tt)
    exact = exact.detach().numpy()
    print(
        f"check, max relative difference per image: onnxscope batched vs float64 torch "
        f"{max_rel(ours, exact):.1e}, Captum (float32) vs float64 torch "
        f"{max_rel(theirs, exact):.1e}, batched vs per-image loop {max_rel(ours, looped):.1e}"
    )
    fns = {
        "plain forward (ORT, batch N)": lambda: plain.run(None, {"x": X}),
        "onnxscope batched votes": batched,
        "onnxscope per-image loop": loop,
        "Captum InputXGradient": by_captum,
    }
    times, skipped = round_robin(fns, args.repeat)
    med = {k: float(np.median(v)) for k, v in times.items()}
    base = med["plain forward (ORT, batch N)"]
    print(
        f"\nPart 1: {args.net} {X.shape[2]}², N = {n}, a target per image "
        f"(median of {args.repeat} rounds)"
    )
    print(f"{'':32s} {'total ms':>9s} {'ms/image':>9s} {'x plain':>8s} {'x batched':>9s}")
    for key, t in med.items():
        print(
            f"{key:32s} {1e3 * t:9.1f} {1e3 * t / n:9.2f} {t / base:8.2f} "
            f"{t / med['onnxscope batched votes']:9.2f}"
        )
    for key, why in skipped.items():
        print(f"{key}: not timed ({why})")
    speedup = med["Captum InputXGradient"] / med["onnxscope batched votes"]
    print(f"Captum / onnxscope batched: {speedup:.2f}x")


def part_folder(args, path, size) -> None:
    from PIL import Image

    from onnxscope.batch import run_batch

    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "images")
        os.makedirs(folder)
        yy, xx = np.mgrid[0:size, 0:size] / size
        for i in range(args.images):  # smooth random pictures with edges
            a, b, c = rng.uniform(-4, 4, 3)
            base = np.stack([np.sin(a * xx + b * yy + c + k) for k in range(3)], axis=2)
            noise = rng.normal(0, 0.1, (size, size, 3))
            Image.fromarray(np.uint8(np.clip(127 + 100 * base + 40 * noise, 0, 255))).save(
                os.path.join(folder, f"im{i:04d}.png")
            )
        print(
            f"\nPart 2: onnxscope batch over {args.images} PNG images {size}², batch size "
            f"{args.batch_size}, targets 'top'"
        )
        print(f"{'engine':24s} {'seconds':>8s} {'s/image':>8s} {'images/s':>9s}")
        runs = [(e, True) for e in args.engines.split(",")] + [("local", False)]
        for engine, verify in runs:
            out = os.path.join(tmp, f"out-{engine}-{verify}")
            start = time.perf_counter()
            summary = run_batch(
                path,
                [folder],
                out,
                engine=engine,
                page=False,
                progress=False,
                batch_size=args.batch_size,
                verify=verify,
                device=args.device,
            )
            seconds = time.perf_counter() - start
            assert summary.failed == 0 and summary.unverified == 0, summary
            label = engine + ("" if verify else " (no verify)")
            print(
                f"{label:24s} {seconds:8.1f} {seconds / args.images:8.3f} "
                f"{args.images / seconds:9.2f}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="resnet18", choices=sorted(BENCH_NETS))
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--engines", default="local,processes,ray")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--skip", choices=["votes", "folder"], help="leave out one part")
    args = p.parse_args()
    import torch

    print(
        f"CPU: {cpu_name()} ({os.cpu_count()} cores), load {loadavg()}, "
        f"torch threads {torch.get_num_threads()}"
    )
    make, size, _ = BENCH_NETS[args.net]
    model = seeded(make())
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        classes = model(torch.from_numpy(X[:1])).shape[1]
    targets = [int(t) for t in rng.integers(0, classes, args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        path = export_with_free_batch(model, X[:1], os.path.join(tmp, f"{args.net}.onnx"))
        if args.skip != "votes":
            part_votes(args, path, model, X, targets)
        if args.skip != "folder":
            part_folder(args, path, size)


if __name__ == "__main__":
    main()
