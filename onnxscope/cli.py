"""The `onnxscope` command: inspect, rewrite and verify ONNX models.

Exit status: 0 success; 1 a check failed (verify over tolerance, inspect found unsupported
nodes); 2 the command could not run (bad file, bad input, unsupported model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from .errors import InputError, OnnxscopeError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR = 0, 1, 2


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=1x3x224x224, got '{text}'") from None


def _input_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got '{text}'")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onnxscope",
        description="Exact linear interpreters of ONNX models: F(x) = A_x x + c_x.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, optional_model=False):
        sp.add_argument(
            "model",
            nargs="?" if optional_model else None,
            help="path to the .onnx model (never modified)",
        )
        sp.add_argument("--wrt", help="the input to interpret (default: the first float input)")
        sp.add_argument(
            "--input-shape",
            action="append",
            type=_shape_arg,
            default=[],
            metavar="NAME=1x3x224x224",
            help="fix the shape of an input",
        )
        sp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])

    sp = sub.add_parser("inspect", help="list the nonlinear units, gates and unsupported nodes")
    common(sp, optional_model=True)
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument(
        "--ops",
        action="store_true",
        help="instead: every ONNX op and how onnxscope handles it (the coverage ledger)",
    )

    sp = sub.add_parser("rewrite", help="write mask.onnx, linear.onnx, bias.onnx and a manifest")
    common(sp)
    sp.add_argument("-o", "--output", required=True, help="output folder")

    def inputs(sp):
        sp.add_argument(
            "--input",
            action="append",
            type=_input_arg,
            default=[],
            metavar="NAME=FILE.npy",
            help="an input value (random when not given)",
        )
        sp.add_argument("--seed", type=int, default=0, help="seed of the random input")

    sp = sub.add_parser("verify", help="check reconstruction, linearity and the adjoint")
    common(sp)
    inputs(sp)
    sp.add_argument("--tol", type=float, default=1e-5, help="largest relative error accepted")
    sp.add_argument("--json", action="store_true", help="print one JSON object")

    sp = sub.add_parser("rows", help="write rows A_x^T e_i (what output element i looks at)")
    common(sp)
    inputs(sp)
    sp.add_argument(
        "--index",
        type=int,
        action="append",
        required=True,
        help="flat output index (repeat for several)",
    )
    sp.add_argument("--output-name", help="which model output (default: the only one)")
    sp.add_argument("-o", "--out", required=True, help="the .npy file to write [n, *x.shape]")

    sp = sub.add_parser("votes", help="write pixel-wise votes x ⊙ A_x^T e_k of classes")
    common(sp)
    inputs(sp)
    sp.add_argument(
        "--class",
        dest="classes",
        type=int,
        action="append",
        help="class (flat output index) to explain; default: the top class",
    )
    sp.add_argument("--output-name", help="which model output (default: the only one)")
    sp.add_argument("-o", "--out", required=True, help="the .npy file to write [n, *x.shape]")

    from .report import add_parser as add_report_parser  # `report`: its options live in report.py

    add_report_parser(sub)
    from .converters.convert import add_parser as add_convert_parser  # `convert`: converters/

    add_convert_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except OnnxscopeError as exc:
        print(f"onnxscope: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (`onnxscope inspect M | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return EXIT_OK
    except Exception as exc:  # a bug: say so in one paragraph unless --debug
        if args.debug:
            raise
        print(
            f"onnxscope: internal error ({type(exc).__name__}: {exc}). This is a bug in "
            "onnxscope; rerun with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return EXIT_ERROR


def _scope(args):
    from .scope import LinearScope

    return LinearScope(args.model, wrt=args.wrt, providers=args.device)


def cmd_inspect(args) -> int:
    from .rewriter import Analysis

    if args.ops:
        from .registry import coverage

        rows = coverage()
        if args.json:
            print(json.dumps([dict(zip(("op", "status", "adjoint"), r)) for r in rows], indent=2))
        else:
            _table(("op", "status", "adjoint"), rows)
        return EXIT_OK
    if not args.model:
        raise InputError("inspect needs a MODEL (or --ops for the list of supported ops).")
    scope = _scope(args)
    model = scope.analyze(dict(args.input_shape))
    analysis = Analysis(model, scope.wrt)
    units = analysis.units()
    if args.json:
        print(
            json.dumps(
                {
                    "wrt": scope.wrt,
                    "units": [vars(u) for u in units],
                    "unsupported": [
                        {"node": n, "op": op, "why": why} for n, op, why in analysis.problems
                    ],
                },
                indent=2,
            )
        )
    else:
        print(
            f"Interpreting input '{scope.wrt}' {list(model.input_shapes[scope.wrt])}: "
            f"{len(units)} frozen unit(s) and gate(s)."
        )
        rows = [(u.node, u.op, u.kind, u.frozen) for u in units]
        _table(("node", "op", "kind", "frozen to"), rows)
        if analysis.problems:
            print(f"\n{len(analysis.problems)} unsupported node(s):")
            _table(("node", "op", "why"), analysis.problems)
    return EXIT_CHECK_FAILED if analysis.problems else EXIT_OK


def _table(header, rows) -> None:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def cmd_rewrite(args) -> int:
    scope = _scope(args)
    shapes = dict(args.input_shape)
    artifacts = scope.artifacts(shapes)
    out = os.path.abspath(args.output)
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"Output path '{out}' exists and is not a folder.")
    os.makedirs(out, exist_ok=True)
    files = artifacts.files()
    model_path = os.path.abspath(args.model)
    for name in files:
        target = os.path.join(out, name)
        if os.path.exists(target) and os.path.samefile(target, model_path):
            raise InputError(
                f"Writing '{target}' would overwrite the input model; choose another -o."
            )
    for name, data in files.items():
        write_atomic(os.path.join(out, name), data)
    units = artifacts.manifest["units"]
    print(f"Wrote {', '.join(files)} to {out} ({len(units)} frozen unit(s) and gate(s)).")
    return EXIT_OK


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".onnxscope-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _interpret(args):
    """The scope and its interpretation at the --input values (random ones where not given)."""
    from .model import graph_inputs, input_spec, resolve_input_shapes

    scope = _scope(args)
    given = {}
    for name, path in args.input:
        try:
            given[name] = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"Could not read '{path}' for input '{name}' as .npy: {exc}") from None
    shapes = dict(args.input_shape)
    shapes.update({k: v.shape for k, v in given.items()})
    shapes = resolve_input_shapes(scope.model, shapes)
    rng = np.random.default_rng(args.seed)
    feeds = {}
    for vi in graph_inputs(scope.model):
        _, dtype = input_spec(vi)
        if vi.name in given:
            feeds[vi.name] = given[vi.name]
        elif np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shapes[vi.name]).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shapes[vi.name], dtype)
    x = feeds.pop(scope.wrt)
    return scope, scope.interpret(x, **feeds)


def cmd_verify(args) -> int:
    scope, it = _interpret(args)
    errors = it.verify(seed=args.seed)
    ok = all(v <= args.tol for v in errors.values())
    if args.json:
        print(json.dumps({**errors, "tol": args.tol, "ok": ok, "wrt": scope.wrt}))
    else:
        for name, value in errors.items():
            print(f"{name:15s} {value:.3e}  {'ok' if value <= args.tol else 'FAILED'}")
    return EXIT_OK if ok else EXIT_CHECK_FAILED


def cmd_rows(args) -> int:
    _, it = _interpret(args)
    rows = it.rows(args.index, args.output_name)
    _save_npy(args.out, rows)
    print(f"Wrote {len(rows)} row(s) {tuple(rows.shape[1:])} to {args.out}.")
    return EXIT_OK


def cmd_votes(args) -> int:
    _, it = _interpret(args)
    name = args.output_name or it._single_name()
    classes = args.classes or [int(np.argmax(it.outputs[name]))]
    maps = np.stack([it.votes(k, name) for k in classes])
    _save_npy(args.out, maps)
    rows = []
    for k in classes:
        p = it.bias_share(k, name)
        rows.append(
            (k, f"{p['output']:.6g}", f"{p['votes']:.6g}", f"{p['bias']:.6g}", f"{p['share']:.3f}")
        )
    _table(("class", "output", "sum of votes", "bias", "bias share"), rows)
    print(f"Wrote {len(maps)} vote map(s) to {args.out}.")
    return EXIT_OK


def _save_npy(path: str, array: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomic(os.path.abspath(path), buffer.getvalue())


def cmd_report(args) -> int:  # the `report` subcommand lives in report.py
    from .report import run_cli

    return run_cli(args)


def cmd_convert(args) -> int:  # the `convert` subcommand lives in converters/convert.py
    from .converters.convert import run_cli

    return run_cli(args)


COMMANDS = {
    "inspect": cmd_inspect,
    "rewrite": cmd_rewrite,
    "verify": cmd_verify,
    "rows": cmd_rows,
    "votes": cmd_votes,
    "report": cmd_report,
    "convert": cmd_convert,
}


if __name__ == "__main__":
    sys.exit(main())
