"""The conformance zoo as a table: every architecture of tests/zoo.py (and of tests/torch_models.py)
exported with both torch exporters, interpreted by onnxscope at its seeded input, and verified.

    .venv/bin/python bench/zoo_table.py [--out FILE] [--only NAME ...] [--exporters legacy dynamo]
                                        [--no-existing]

Prints a Markdown table (architecture × exporter): the opset written, verify()'s reconstruction,
linearity and adjoint relative errors (float32; each must be ≤ 1e-5), the largest relative
difference of the mask graph's output from torch's forward, the number of frozen units and gates
(`len(scope.artifacts(shapes).manifest["units"])`), the export time and the time to rewrite,
interpret and verify. A case that cannot be exported or interpreted gets a row with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
import warnings

import numpy as np
import onnx
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import torch_models as tm  # noqa: E402
import zoo  # noqa: E402

import onnxscope  # noqa: E402

EXPORTERS = ("legacy", "dynamo")
TOL = 1e-5


def cases(include_existing: bool):
    """(name, source, builder, exporters): builder() -> (module, x, other inputs)."""
    out = [
        (name, "zoo", lambda n=name: zoo.build(n), arch.exporters)
        for name, arch in zoo.ARCHITECTURES.items()
    ]
    if include_existing:
        out += [
            (name, "torch_models", lambda n=name: (*tm.build(n), {}), EXPORTERS)
            for name in tm.ARCHITECTURES
        ]
    return out


@contextlib.contextmanager
def quiet():
    """The dynamo exporter prints its progress on stdout: keep stdout for the table."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def short(err: Exception, limit: int = 110) -> str:
    text = " ".join(str(err).split())
    if "node '" in text:  # onnxscope's refusal: keep the node, its op and why
        text = text[text.index("node '") :].split(". Run")[0]
    text = f"{type(err).__name__}: {text}"
    return (text[: limit - 1] + "…" if len(text) > limit else text).replace("|", "\\|")


def run_case(build, exporter: str, tmp: str, name: str) -> dict:
    row = {
        "opset": "",
        "rec": None,
        "lin": None,
        "adj": None,
        "torch": None,
        "units": "",
        "export_s": None,
        "scope_s": None,
        "note": "",
    }
    module, x, others = build()
    path = os.path.join(tmp, f"{name}-{exporter}.onnx")
    t0 = time.perf_counter()
    try:
        with quiet():
            zoo.export(module, x, others, path, exporter)
    except Exception as err:  # noqa: BLE001 - a torch limitation: reported in the table
        row["note"] = "torch cannot export: " + short(err)
        return row
    row["export_s"] = time.perf_counter() - t0
    model = onnx.load(path)
    row["opset"] = str({o.domain: o.version for o in model.opset_import}.get("", ""))
    t1 = time.perf_counter()
    try:
        scope = onnxscope.LinearScope(path, wrt="x")
        feeds = {k: v.numpy() for k, v in others.items()}
        it = scope.interpret(x.numpy(), **feeds)
        errors = it.verify()
        shapes = {"x": tuple(x.shape), **{k: tuple(v.shape) for k, v in others.items()}}
        row["units"] = str(len(scope.artifacts(shapes).manifest["units"]))
    except Exception as err:  # noqa: BLE001 - an onnxscope refusal or bug: reported
        row["scope_s"] = time.perf_counter() - t1
        row["note"] = "onnxscope: " + short(err)
        return row
    row["scope_s"] = time.perf_counter() - t1
    row["rec"], row["lin"] = errors["reconstruction"], errors["linearity"]
    row["adj"] = errors.get("adjoint")
    y = zoo.forward(module, x, others).numpy()
    row["torch"] = float(np.abs(it.output - y).max() / max(np.abs(y).max(), 1e-30))
    worst = max(v for v in (row["rec"], row["lin"], row["adj"]) if v is not None)
    if worst > TOL or row["adj"] is None:
        row["note"] = "above 1e-5" if row["adj"] is not None else "no adjoint graph"
    return row


def fmt(v, spec=".1e") -> str:
    return "" if v is None else format(v, spec)


def table(rows) -> str:
    head = (
        "| architecture | source | exporter | opset | reconstruction | linearity | adjoint "
        "| vs torch | frozen units | export s | rewrite+verify s | ok |"
    )
    lines = [head, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, source, exporter, r in rows:
        ok = "✓" if not r["note"] else ("✗ " + r["note"])
        lines.append(
            f"| {name} | {source} | {exporter} | {r['opset']} | {fmt(r['rec'])} | "
            f"{fmt(r['lin'])} | {fmt(r['adj'])} | {fmt(r['torch'])} | {r['units']} | "
            f"{fmt(r['export_s'], '.2f')} | {fmt(r['scope_s'], '.2f')} | {ok} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="also write the Markdown table to this file")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these architectures")
    p.add_argument("--exporters", nargs="+", choices=EXPORTERS, default=list(EXPORTERS))
    p.add_argument(
        "--no-existing",
        action="store_true",
        help="leave out the architectures of tests/torch_models.py",
    )
    args = p.parse_args(argv)

    selected = [c for c in cases(not args.no_existing) if not args.only or c[0] in args.only]
    unknown = set(args.only or ()) - {c[0] for c in selected}
    if unknown:
        p.error(f"unknown architecture(s) {sorted(unknown)}")
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for exporter in args.exporters:
            # an exporter known not to export an architecture is still tried: the row says why
            for name, source, build, _ in selected:
                rows.append((name, source, exporter, run_case(build, exporter, tmp, name)))
                print(f"  {name}-{exporter} done", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    failed = sum(1 for *_, r in rows if r["note"])
    summary = (
        f"{len(rows)} cases ({len({r[0] for r in rows})} architectures × "
        f"{len(args.exporters)} exporters), {len(rows) - failed} within 1e-5, {failed} not; "
        f"torch {torch.__version__}, onnxscope {onnxscope.__version__}, "
        f"{platform.machine()} {os.cpu_count()} CPU(s), {total:.0f} s in all."
    )
    text = table(rows) + "\n\n" + summary + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
