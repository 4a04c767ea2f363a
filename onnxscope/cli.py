"""The `onnxscope` command: inspect, rewrite and verify ONNX models.

Exit status: 0 success; 1 a check failed (verify over tolerance, inspect found unsupported
nodes); 2 the command could not run (bad file, bad input, unsupported model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .errors import InputError, OnnxscopeError
from .files.inputs import assignment, input_shape, load_array
from .files.outputs import OutputSet, check_file, publish_file

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in onnxscope's one-paragraph form (exit status 2)."""

    def error(self, message):
        self.exit(
            EXIT_ERROR, f"onnxscope: error: {message} (`{self.prog} --help` lists the options).\n"
        )


def add_input_shape_option(sp, help: str) -> None:
    """--input-shape NAME=1x3x224x224, repeatable (args.input_shape: [(name, shape), ...])."""
    sp.add_argument(
        "--input-shape",
        action="append",
        type=_shape_arg,
        default=[],
        metavar="NAME=1x3x224x224",
        help=help,
    )


def _arg(parse):
    """An argparse type from a parser of onnxscope.files.inputs: its InputError becomes the
    option's error."""

    def arg(text: str):
        try:
            return parse(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return arg


_shape_arg = _arg(input_shape)  # NAME=1x3x224x224
_input_arg = _arg(lambda text: assignment(text, "NAME=FILE") if "=" in text else (None, text))
_other_arg = _arg(lambda text: assignment(text, "NAME=VALUE or NAME=FILE.npy"))


def _non_negative(what: str):
    """An argparse type: a whole number of 0 or more (`what` names it in the error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{what} must be 0 or more, got {value}")
        return value

    return parse


_seed_arg = _non_negative("the seed")


def _ints(form: str):
    """An argparse type for comma-separated integers written as `form` ('Y,X', 'Y,X,H,W')."""

    def parse(text: str) -> tuple[int, ...]:
        values = text.split(",")
        try:
            if len(values) != form.count(",") + 1:
                raise ValueError
            return tuple(int(v) for v in values)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {form}, got '{text}'") from None

    return parse


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got '{text}'")
    return value


def _ints_any(text: str) -> tuple[int, ...]:
    """Comma-separated integers of any count (a position: Y,X or C,Y,X or N,C,Y,X)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers such as Y,X or C,Y,X, got '{text}'"
        ) from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxscope")
    except PackageNotFoundError:  # a source tree that was not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="onnxscope",
        description="Exact linear interpreters of ONNX models: F(x) = A_x x + c_x.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)

    p.add_argument("--version", action="version", version=f"onnxscope {_version()}")

    def common(sp, optional_model=False):
        sp.add_argument(
            "model",
            nargs="?" if optional_model else None,
            help="path to the .onnx model (never modified)",
        )
        sp.add_argument("--wrt", help="the input to interpret (default: the first float input)")
        add_input_shape_option(sp, "fix the shape of an input")
        sp.add_argument(
            "--device", default="cpu", choices=["cpu", "cuda"], help="where ONNX Runtime runs"
        )
        sp.add_argument(
            "--logits",
            action="store_true",
            help="read outputs computed by a Softmax or LogSoftmax through their logits",
        )
        add_mode_option(sp)

    sp = sub.add_parser("inspect", help="list the nonlinear units, gates and unsupported nodes")
    common(sp, optional_model=True)
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument(
        "--ops",
        action="store_true",
        help="instead: every ONNX op and how onnxscope handles it (the coverage ledger)",
    )

    sp = sub.add_parser(
        "rewrite",
        help="write the rewritten graphs and their manifest",
        description="Write, as one set into the folder -o: mask.onnx (the model with every "
        "decision as an output), linear.onnx (A_x z), bias.onnx (c_x), adjoint.onnx (A_x^T w, "
        "where the model has one), the reading graphs votes.onnx, rows.onnx, columns.onnx and "
        "scope.onnx (each a plain ONNX model for a server; --readings picks some), and "
        "manifest.json (what each file holds, the masks, the inputs and outputs).",
    )
    common(sp)
    sp.add_argument(
        "-o",
        "--output",
        required=True,
        help="output folder: created, or replaced atomically if it holds an earlier rewrite",
    )
    sp.add_argument(
        "--output-name",
        help="the model output the reading graphs (votes, rows, columns) read (default: the first)",
    )
    sp.add_argument(
        "--readings",
        help="comma-separated reading graphs to write (default: every one the model can have; "
        "'' for none)",
    )

    def inputs(sp):
        sp.add_argument(
            "--input",
            action="append",
            type=_input_arg,
            default=[],
            metavar="[NAME=]FILE",
            help="an input's value: a .npy/.npz, or an image made into the input with the image "
            "options below (NAME may be left out for the interpreted input); random when not "
            "given, which is said on stderr",
        )
        sp.add_argument("--seed", type=_seed_arg, default=0, help="seed of the random input (0)")
        add_image_options(sp, logits=False)

    def output_file(sp, what: str):
        sp.add_argument(
            "-o",
            "--output",
            dest="out",
            required=True,
            help=f"the .npy file to write: {what} (.npy is appended if missing)",
        )
        sp.add_argument("--output-name", help="which model output (default: the only one)")

    def positions(sp, of: str):
        sp.add_argument(
            "--index",
            type=int,
            action="append",
            help=f"{of} position as a flat index into one sample's {of} (repeat for several)",
        )
        sp.add_argument(
            "--at",
            type=_ints_any,
            action="append",
            metavar="Y,X|C,Y,X",
            help=f"{of} position in the tensor's coordinates: Y,X of a one-channel map, C,Y,X, "
            "N,C,Y,X at batch 1 (repeat for several)",
        )

    sp = sub.add_parser("verify", help="check reconstruction, linearity and the adjoint")
    common(sp)
    inputs(sp)
    sp.add_argument(
        "--tol",
        type=float,
        default=1e-5,
        help="largest relative error accepted where the measured float noise floor is smaller",
    )
    sp.add_argument(
        "--strict", action="store_true", help="also fail (exit 1) when the adjoint is not checked"
    )
    sp.add_argument("--json", action="store_true", help="print one JSON object")

    sp = sub.add_parser("rows", help="write rows A_x^T e_i (what output element i looks at)")
    common(sp)
    inputs(sp)
    positions(sp, "output")
    output_file(sp, "the rows, [K, *input]")

    sp = sub.add_parser("columns", help="write columns A_x e_j (where input element j goes)")
    common(sp)
    inputs(sp)
    positions(sp, "input")
    output_file(sp, "the columns, [K, *output]")

    sp = sub.add_parser("votes", help="write pixel-wise votes x ⊙ A_x^T e_k of classes")
    common(sp)
    inputs(sp)
    _add_class_option(
        sp,
        "class to explain: its index in one sample's output, a label (--labels), or 'top' "
        "(each sample's largest; the default); repeat for several",
    )
    output_file(sp, "the vote maps, [classes, *input]")

    sp = sub.add_parser("svd", help="write the top singular triplets of A_x (or of a crop)")
    common(sp)
    inputs(sp)
    sp.add_argument("-k", type=positive_int, default=4, help="how many triplets (4)")
    sp.add_argument(
        "--crop",
        type=_ints("Y,X,H,W"),
        metavar="Y,X,H,W",
        help="input crop; for an image output also the output crop (the same region at the "
        "output's scale)",
    )
    sp.add_argument(
        "--output-crop", type=_ints("Y,X,H,W"), metavar="Y,X,H,W", help="output crop (overrides)"
    )
    sp.add_argument(
        "-o",
        "--output",
        dest="out",
        required=True,
        help="the .npz file to write: U [k, *output crop], s [k], Vt [k, *input crop] (.npz is "
        "appended if missing)",
    )
    sp.add_argument("--output-name", help="which model output (default: the only one)")

    sp = sub.add_parser("bias", help="write the bias image c_x (the part of F(x) no input moves)")
    common(sp)
    inputs(sp)
    output_file(sp, "c_x, shaped like the output")

    sp = sub.add_parser(
        "diff",
        help="what changed between two inputs: flipped decisions, how far A_x moved, votes",
        description="Compare the interpretations at two inputs A and B (or A and a noisy copy, "
        "--noise): the decisions each frozen unit flipped, ‖A_B − A_A‖_F / ‖A_A‖_F estimated "
        "with random probes, each class's output, Σ votes and bias at both, and with --steps "
        "the decisions flipped along the segment from A to B.",
    )
    common(sp)
    _add_diff_arguments(sp)

    _add_report_parser(sub)
    from .converters.convert import add_parser as add_convert_parser  # `convert`: converters/

    add_convert_parser(sub)
    # `serve` and `triton` (onnxscope/serve/): each module adds its subparser and sets
    # `func`; their imports of the serve extra's libraries happen when the command runs
    from .serve import commands as serve_commands
    from .serve import triton as triton_commands

    serve_commands.add_parser(sub)
    from .serve.explore import commands as explore_commands  # `explore`: serve/explore/

    explore_commands.add_parser(sub)
    triton_commands.add_parser(sub)
    from .batch import commands as batch_commands  # `batch`: onnxscope/batch/

    batch_commands.add_parser(sub)
    return p


def _add_class_option(sp, help: str) -> None:
    sp.add_argument(
        "--class",
        dest="classes",
        type=_target_arg,
        action="append",
        metavar="K|LABEL|top",
        help=help,
    )


def _add_diff_arguments(sp) -> None:
    sp.add_argument("first", metavar="A", help="the first input: an image, or a .npy/.npz")
    sp.add_argument(
        "second", metavar="B", nargs="?", help="the second input (or give --noise instead)"
    )
    sp.add_argument(
        "--noise",
        type=float,
        help="B = A + Gaussian noise whose standard deviation is this share of A's (e.g. 0.01)",
    )
    sp.add_argument("--seed", type=_seed_arg, default=0, help="seed of the noise and probes (0)")
    sp.add_argument(
        "--steps",
        type=_non_negative("the number of steps"),
        default=0,
        help="also compare the decisions at N + 1 evenly spaced points from A to B (0: off)",
    )
    _add_class_option(
        sp,
        "class whose output, Σ votes and bias are compared (default: the top class at A and at "
        "B); repeat for several",
    )
    sp.add_argument(
        "--probes", type=positive_int, default=8, help="random probes of the ‖A_B − A_A‖ estimate"
    )
    sp.add_argument(
        "--output-name", help="the output whose A_x and classes are compared (default: the first)"
    )
    sp.add_argument("--json", action="store_true", help="print one JSON object")
    sp.add_argument(
        "--report",
        metavar="FILE.html",
        help="also write a one-file HTML page with the figures (.html appended if missing)",
    )
    add_image_options(sp, logits=False)


def _add_report_parser(sub) -> None:
    """Add `report` to the CLI's subparsers."""
    sp = sub.add_parser("report", help="write an HTML report (figures, votes, rows) of one image")
    arg = sp.add_argument
    many = lambda flag, dest, type_, metavar, text: arg(  # noqa: E731 - a repeatable option
        flag, dest=dest, type=type_, metavar=metavar, action="append", help=f"{text} (repeat)"
    )
    arg("model", help="path to the .onnx model (never modified)")
    arg("image", help="PNG/JPEG image, or .npy (the input itself, or an H×W×C image)")
    arg(
        "-o",
        "--output",
        required=True,
        help="output folder: created, or replaced atomically if it holds an earlier report",
    )
    arg("--wrt", help="the input to interpret (default: the first float input)")
    arg("--device", default="cpu", choices=["cpu", "cuda"], help="where ONNX Runtime runs")
    many("--output-name", "outputs", str, "NAME", "report on this output only (default: all)")
    many("--class", "classes", int, "K", "output index to show votes for (default: the top)")
    arg("--top", type=int, default=3, help="how many top classes to show (3)")
    many("--row", "rows", _ints("Y,X"), "Y,X", "output position for a row A_xᵀe_i")
    many("--column", "columns", _ints("Y,X"), "Y,X", "input position for a column A_x e_j")
    arg("--channel", type=int, default=0, help="channel of those positions (0)")
    arg(
        "--crop",
        type=_ints("Y,X,H,W"),
        metavar="Y,X,H,W",
        help="input crop for the singular vectors (central 8×8)",
    )
    arg("--svd", dest="svd_k", type=int, default=4, help="how many singular triplets (4)")
    arg("--mask-layer", metavar="NODE", help="node whose masks are shown")
    arg(
        "--sign",
        choices=["all", "positive", "negative", "absolute"],
        default="all",
        help="which part of signed maps to draw (all: red for, blue against)",
    )
    arg(
        "--clip",
        type=float,
        default=99.5,
        help="colour scales end at this percentile of |value| (99.5; 100: the largest)",
    )
    arg("--alpha", type=float, default=0.7, help="opacity of maps drawn over the input (0.7)")
    many("--other", "other", _other_arg, "NAME=VALUE", "another input: a number or a .npy file")
    add_image_options(sp, mode_both=True)


MODE_HELP = (
    "how smooth units and products are linearized: secant (the paper's interpreter: each "
    "smooth unit by its secant through f(0), one operand of each product frozen; the default) "
    "or tangent (each by its tangent at x, products by the product rule: A_x is the Jacobian)"
)


def add_mode_option(sp, both: bool = False) -> None:
    """--mode secant|tangent (and `both`, for a report of the two side by side)."""
    choices = ["secant", "tangent", *(["both"] if both else [])]
    extra = "; both: the two side by side" if both else ""
    sp.add_argument("--mode", choices=choices, default="secant", help=MODE_HELP + extra)


def add_image_options(sp, logits: bool = True, mode_both: bool = False) -> None:
    """How an image file becomes the model input (onnxscope.report.images), and how its output
    is read (--labels, and --logits and --mode unless the parser has them already): the options
    every command that reads an image shares."""
    arg = sp.add_argument
    arg("--labels", type=lambda t: t.split(","), help="class names: a,b,c")
    arg("--layout", choices=["NCHW", "NHWC"], help="default: from the input shape")
    arg("--color", choices=["rgb", "bgr", "gray"], help="default: from the channel count")
    arg(
        "--size",
        type=_ints("H,W"),
        metavar="H,W",
        help="size for free spatial dims (default: the image's)",
    )
    arg("--scale", help="pixel scale, e.g. 1/255 (default for 8-bit images) or 1")
    arg("--mean", help="subtracted after scaling: one value or one per channel")
    arg("--std", help="divided by after the mean: one value or one per channel")
    arg(
        "--resize",
        choices=["crop", "fit", "stretch"],
        help="an image of another size: aspect kept and centre-cropped (crop, the default), "
        "kept and padded (fit), or stretched",
    )
    if logits:
        arg(
            "--logits",
            action="store_true",
            help="read outputs computed by a Softmax or LogSoftmax through their logits",
        )
        add_mode_option(sp, both=mode_both)


IMAGE_CONVENTIONS = ("layout", "color", "size", "scale", "mean", "std", "resize")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .runtime.sessions import quiet_process_logs

    quiet_process_logs()  # the CLI owns its process: ONNX Runtime's errors come in our words
    try:
        return COMMANDS[args.command](args) if args.command in COMMANDS else args.func(args)
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
    """The LinearScope of the command's model (--wrt, --device, --logits, --labels, --mode),
    saying on stderr which outputs --logits cut, or that there was none, and the tangent mode."""
    import warnings

    from .runtime.scope import LinearScope

    logits = getattr(args, "logits", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scope = LinearScope(
            args.model,
            wrt=args.wrt,
            providers=args.device,
            labels=getattr(args, "labels", None),
            logits=logits,
            mode=getattr(args, "mode", "secant"),
        )
    if scope.mode == "tangent":
        print("onnxscope: notice: tangent mode: A_x is the Jacobian of F at x", file=sys.stderr)
    for warning in caught:
        print(f"onnxscope: notice: {warning.message}", file=sys.stderr)
    if scope.cut:
        renamed = ", ".join(f"'{n}' -> '{n}_logits'" for n in scope.cut)
        print(f"onnxscope: notice: reading the logits of {renamed}", file=sys.stderr)
    return scope


def cmd_inspect(args) -> int:
    from .rewrite.analysis import Analysis

    if args.ops:
        from .rewrite.registry import coverage

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
    _say_batch_defaults(scope, args)
    analysis = Analysis(model, scope.wrt, scope.mode)
    units = analysis.units()
    if args.json:
        print(
            json.dumps(
                {
                    "wrt": scope.wrt,
                    "mode": scope.mode,
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
            f"Interpreting input '{scope.wrt}' {list(model.input_shapes[scope.wrt])} "
            f"({scope.mode} mode): {len(units)} frozen unit(s) and gate(s)."
        )
        rows = [(u.node, u.op, u.kind, u.frozen) for u in units]
        _table(("node", "op", "kind", "frozen to"), rows)
        if analysis.problems:
            print(f"\n{len(analysis.problems)} unsupported node(s):")
            _table(("node", "op", "why"), analysis.problems)
    return EXIT_CHECK_FAILED if analysis.problems else EXIT_OK


def _say_batch_defaults(scope, args) -> None:
    """A notice for each free batch dimension read as 1 (no --input-shape for its input)."""
    from .graph.model import batch_defaults

    found = batch_defaults(scope.model, dict(args.input_shape))
    if found:
        print(
            f"onnxscope: notice: free batch dimension(s) {', '.join(found)} read as 1 "
            "(--input-shape NAME=... to choose)",
            file=sys.stderr,
        )


def _table(header, rows) -> None:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


REWRITE_FILES = {"mask.onnx", "linear.onnx", "bias.onnx", "adjoint.onnx", "scope.onnx"}


def _legacy_rewrite(manifest: dict) -> set[str] | None:
    """The files of a rewrite written before manifests listed them (onnxscope < issue 11)."""
    if {"wrt", "input_shapes", "outputs", "units", "linear_inputs"} <= manifest.keys():
        return REWRITE_FILES | {"manifest.json"}
    return None


REWRITE = OutputSet("rewrite", "manifest.json", _legacy_rewrite)  # graphs, manifest.json


def cmd_rewrite(args) -> int:
    scope = _scope(args)
    sources = [("input model", args.model)]
    REWRITE.check(args.output, sources=sources)  # before the work, not only after
    artifacts = scope.artifacts(dict(args.input_shape))
    _say_batch_defaults(scope, args)
    readings = None
    if args.readings is not None:
        from .rewrite.readings import parse_readings

        readings = parse_readings(args.readings)
    files = artifacts.files(args.output_name, readings)
    out = REWRITE.publish(args.output, files, sources=sources)
    units = artifacts.manifest["units"]
    print(
        f"Wrote {', '.join(files)} to {out} ({len(units)} frozen unit(s) and gate(s), "
        f"{scope.mode} mode)."
    )
    return EXIT_OK


def _interpret(args):
    """The scope and its interpretation at the --input values (random ones where not given,
    said on stderr). A file is a .npy/.npz array, or an image made into the input as `report`
    makes it (the image options); --input FILE without NAME is the interpreted input."""
    from .graph.model import graph_inputs, input_feeds, input_spec, resolve_input_shapes

    scope = _scope(args)
    specs = {vi.name: input_spec(vi) for vi in graph_inputs(scope.model)}
    given = {}
    for name, path in args.input:
        name = name or scope.wrt
        if name not in specs:
            raise InputError(f"Unknown input '{name}'; the model's inputs are {list(specs)}.")
        given[name] = _input_value(args, name, path, specs[name])
    shapes = dict(args.input_shape)
    shapes.update({k: v.shape for k, v in given.items()})
    if scope.wrt in given and scope._exported_at_batch_1(given[scope.wrt].shape):
        shapes[scope.wrt] = (1, *given[scope.wrt].shape[1:])  # read one sample at a time
    shapes = resolve_input_shapes(scope.model, shapes)
    fed = input_feeds(specs, given, shapes, seed=args.seed)
    random = {name: value for name, value in fed.items() if name not in given}
    x = fed.pop(scope.wrt)
    it = scope.interpret(x, **fed)
    for name, value in random.items():  # said once the model took them
        kind = "N(0, 1)" if np.issubdtype(value.dtype, np.floating) else "of zeros"
        print(
            f"onnxscope: notice: no --input for '{name}': a random input {kind} "
            f"{list(value.shape)} (seed {args.seed}) was used",
            file=sys.stderr,
        )
    return scope, it


def _input_value(args, name: str, path: str, spec) -> np.ndarray:
    """--input NAME=FILE: a .npy/.npz as it is, else an image (report's conventions)."""
    if path.lower().endswith((".npy", ".npz")):
        return load_array(path, name)
    from .report.images import load_image

    conventions = {k: getattr(args, k) for k in IMAGE_CONVENTIONS if getattr(args, k) is not None}
    x, _ = load_image(path, spec[0], dtype=spec[1], **conventions)
    return x


def cmd_verify(args) -> int:
    scope, it = _interpret(args)
    if not args.tol >= 0:
        raise InputError(f"--tol must be a number >= 0, not {args.tol}.")
    v = it.verify(seed=args.seed, tol=args.tol)
    ok = v.ok and (v.adjoint_checked or not args.strict)
    given = any(name in (None, scope.wrt) for name, _ in args.input)  # (None: --input FILE)
    where = "the given input" if given else f"a random input N(0, 1), seed {args.seed}"
    if args.json:
        summary = {"ok": ok, "wrt": scope.wrt, "mode": scope.mode, "at": where}
        print(json.dumps({**v, **v.as_dict(), **summary}))
        return EXIT_OK if ok else EXIT_CHECK_FAILED
    for name, value in v.items():
        verdict = "ok" if v.passed(name) else "FAILED"
        print(
            f"{name:15s} {value:.3e}  {verdict:6s} (float noise floor {v.noise[name]:.1e}, "
            f"bound {v.bound(name):.1e})"
        )
    failing = v.failed_samples()
    if v.per_sample:
        verdict = f"samples failing: {failing}" if failing else "every sample ok"
        print(f"{'per sample':15s} {len(v.per_sample)} samples, {verdict}")
    if not v.adjoint_checked:
        print(
            f"{'adjoint':15s} not checked{' (FAILED: --strict)' if args.strict else ''}: "
            f"{v.adjoint_error}"
        )
    print(f"{'conditioning':15s} {v.conditioning:.3g}  ((‖A_x x‖ + ‖c_x‖) / ‖F(x)‖)")
    what = "A_x is the Jacobian of F at x" if scope.mode == "tangent" else "secants through f(0)"
    print(f"{'mode':15s} {scope.mode} ({what})")
    hint = "" if given else f"; pass --input {scope.wrt}=FILE.npy for a real one"
    print(f"at {where} for '{scope.wrt}'{hint}")
    return EXIT_OK if ok else EXIT_CHECK_FAILED


def _sources(args) -> list[tuple[str, str]]:
    """The files a command reads, never to be written: the model and every --input file."""
    return [("input model", args.model)] + [
        (f"--input file of '{name or 'the input'}'", path)
        for name, path in getattr(args, "input", [])
    ]


def _positions(args) -> list:
    """--index (flat) and --at (coordinates) positions, in the order given."""
    found = list(args.index or []) + [tuple(p) for p in args.at or []]
    if not found:
        raise InputError("Give at least one position: --index I (flat) or --at Y,X / C,Y,X.")
    return found


def cmd_rows(args) -> int:
    _out_file(args)  # before the work, not only after
    _, it = _interpret(args)
    rows = it.rows(_positions(args), args.output_name)
    out = _save_npy(args, rows)
    print(f"Wrote {len(rows)} row(s) {tuple(rows.shape[1:])} to {out}.")
    return EXIT_OK


def cmd_columns(args) -> int:
    _out_file(args)
    _, it = _interpret(args)
    name = it._output_name(args.output_name)
    columns = it.columns(_positions(args))
    columns = columns[name] if isinstance(columns, dict) else columns
    out = _save_npy(args, columns)
    print(f"Wrote {len(columns)} column(s) {tuple(columns.shape[1:])} of '{name}' to {out}.")
    return EXIT_OK


def cmd_svd(args) -> int:
    check_file(args.out, sources=_sources(args), suffix=".npz")
    _, it = _interpret(args)
    name = it._output_name(args.output_name)
    x_shape, y_shape = it.x.shape, it.outputs[name].shape
    input_region = _spatial_crop(args.crop, x_shape) if args.crop else None
    output_region = None
    if args.output_crop:
        output_region = _spatial_crop(args.output_crop, y_shape)
    elif args.crop and len(y_shape) == 4 and y_shape[2] * y_shape[3] > 1:
        y, x, h, w = args.crop  # the same region at the output's scale
        fy, fx = x_shape[2] / y_shape[2], x_shape[3] / y_shape[3]
        y0, x0 = int(y / fy), int(x / fx)
        y1 = max(y0 + 1, min(y_shape[2], int(np.ceil((y + h) / fy))))
        x1 = max(x0 + 1, min(y_shape[3], int(np.ceil((x + w) / fx))))
        output_region = _spatial_crop((y0, x0, y1 - y0, x1 - x0), y_shape)
    found = it.svd(args.k, name, input_region=input_region, output_region=output_region)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, U=found.U, s=found.s, Vt=found.Vt)
    publish_file(args.out, buffer.getvalue(), sources=_sources(args), suffix=".npz")
    values = ", ".join(f"{v:.4g}" for v in found.s)
    print(
        f"Top {len(found.s)} singular values of A_x: {values}; wrote U {found.U.shape}, "
        f"s, Vt {found.Vt.shape} to {args.out}{'' if args.out.endswith('.npz') else '.npz'}."
    )
    return EXIT_OK


def _spatial_crop(crop, shape) -> tuple[slice, ...]:
    """Y,X,H,W as a region of a rank-4 NCHW tensor (all of its batch and channels)."""
    y, x, h, w = crop
    if len(shape) != 4:
        raise InputError(f"--crop Y,X,H,W is for rank-4 (NCHW) tensors; this one is {shape}.")
    if not (0 <= y and 0 <= x and h > 0 and w > 0 and y + h <= shape[2] and x + w <= shape[3]):
        raise InputError(f"The crop {crop} is outside the {shape[2]}×{shape[3]} tensor.")
    return (slice(None), slice(None), slice(y, y + h), slice(x, x + w))


def cmd_bias(args) -> int:
    _out_file(args)
    _, it = _interpret(args)
    name = it._output_name(args.output_name)
    bias, output = it.biases[name], it.outputs[name]
    out = _save_npy(args, bias)
    ratio = np.linalg.norm(bias) / max(float(np.linalg.norm(output)), 1e-300)
    print(f"Wrote c_x of '{name}' {tuple(bias.shape)} to {out} (‖c_x‖ / ‖F(x)‖ = {ratio:.3g}).")
    return EXIT_OK


def cmd_votes(args) -> int:
    _out_file(args)  # before the work, not only after
    _, it = _interpret(args)
    name = it._output_name(args.output_name)
    targets = args.classes or ["top"]
    splits = [it.vote_split(t, name) for t in targets]
    maps = np.stack([split.votes for split in splits])  # [targets, *x]
    out = _save_npy(args, maps)
    batch = bool(it.samples and it.samples > 1)
    rows = []
    for split in splits:
        for n, k in enumerate(split.classes):
            parts = (split.output[n], split.sums[n], split.bias[n])
            rows.append(
                ((n,) if batch else ()) + (k, *(f"{v:.6g}" for v in parts), f"{split.share[n]:.3f}")
            )
    header = ("class", "output", "sum of votes", "bias", "bias share")
    _table((("sample",) if batch else ()) + header, rows)
    shape = f" {tuple(maps.shape)} (targets, *input)" if batch else ""
    print(f"Wrote {len(maps)} vote map(s){shape} to {out}.")
    return EXIT_OK


def cmd_diff(args) -> int:
    """`onnxscope diff MODEL A [B]`: what changed between the interpretations at A and B."""
    from .graph.model import graph_inputs, input_feeds, input_spec, resolve_input_shapes
    from .runtime.compare import compare

    if (args.second is None) == (args.noise is None):
        raise InputError("diff compares A with B or with a noisy copy of A: give B or --noise.")
    if args.noise is not None and not args.noise > 0:
        raise InputError(f"--noise must be a number > 0, not {args.noise}.")
    sources = [("input model", args.model), ("input A", args.first)]
    sources += [("input B", args.second)] if args.second else []
    if args.report:
        check_file(args.report, sources=sources, suffix=".html")  # before the work
    scope = _scope(args)
    specs = {vi.name: input_spec(vi) for vi in graph_inputs(scope.model)}
    first = _input_value(args, scope.wrt, args.first, specs[scope.wrt])
    if args.noise is not None:
        rng = np.random.default_rng(args.seed)
        noise = args.noise * float(first.std()) * rng.standard_normal(first.shape)
        second = (first + noise).astype(first.dtype)
        second_text = f"A + noise ({args.noise:g} of A's standard deviation, seed {args.seed})"
    else:
        second = _input_value(args, scope.wrt, args.second, specs[scope.wrt])
        second_text = args.second
    shapes = resolve_input_shapes(scope.model, {**dict(args.input_shape), scope.wrt: first.shape})
    fed = input_feeds(specs, {scope.wrt: first}, shapes, seed=args.seed)
    fed.pop(scope.wrt)
    for name, value in fed.items():
        print(
            f"onnxscope: notice: '{name}' is not compared: a random input "
            f"{list(value.shape)} (seed {args.seed}) was used at both",
            file=sys.stderr,
        )
    found = compare(
        scope, first, second, output=args.output_name, classes=args.classes or "top",
        probes=args.probes, steps=args.steps, seed=args.seed, **fed,
    )  # fmt: skip
    if args.json:
        print(json.dumps(found.summary(), indent=2))
    else:
        _print_comparison(found, args.first, second_text, scope.wrt, first.shape)
    if args.report:
        from .report.compare import comparison_page

        page = comparison_page(found, args.first, second_text, first, second)
        print(f"Wrote {publish_file(args.report, page, sources=sources, suffix='.html')}.")
    return EXIT_OK


def _print_comparison(found, first: str, second: str, wrt: str, shape) -> None:
    flipped = [layer for layer in found.layers if layer.discrete and layer.changed]
    discrete = [layer for layer in found.layers if layer.discrete]
    share = found.flips / found.decisions if found.decisions else 0.0
    print(f"A: {first}\nB: {second}")
    print(f"input '{wrt}' {list(shape)}, output '{found.output}', {found.mode} mode")
    print(
        f"decisions flipped: {found.flips} of {found.decisions} ({share:.3%}), in "
        f"{len(flipped)} of {len(discrete)} decision layer(s)"
    )
    print(
        f"||A_B - A_A||_F / ||A_A||_F ~ {found.linear_change:.4g} ({found.probes} random probes;"
        f" ||A_A||_F ~ {found.linear_norm[0]:.4g}, ||A_B||_F ~ {found.linear_norm[1]:.4g})\n"
    )
    _table(*found.layer_table())
    if found.classes:
        print()
        _table(*found.class_table())
    if found.path:
        flips = " ".join(str(s.flips) for s in found.path)
        print(f"\npath A -> B in {len(found.path)} steps: decisions flipped per step: {flips}")


def _target_arg(text: str):
    """--class: a class index, 'top' (each sample's largest output) or a label (--labels)."""
    try:
        return int(text)
    except ValueError:
        return text


def _out_file(args) -> str:
    """Check -o before the work: the path to write, with .npy appended as numpy would."""
    return check_file(args.out, sources=_sources(args), suffix=".npy")


def _save_npy(args, array: np.ndarray) -> str:
    """Write the .npy atomically; the path written, as printed (with a note if .npy was added)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    publish_file(args.out, buffer.getvalue(), sources=_sources(args), suffix=".npy")
    shown = args.out if args.out.endswith(".npy") else f"{args.out}.npy"
    return shown if shown == f"{args.out}" else f"{shown} (.npy appended to -o, as numpy does)"


REPORT_OPTIONS = (  # the write_report options the subcommand passes through as they are
    "wrt outputs classes top labels rows columns channel crop svd_k mask_layer device layout "
    "color size scale mean std resize logits mode sign clip alpha"
).split()


def cmd_report(args) -> int:
    """`onnxscope report`: write the report and print the path of its index.html."""
    from .report import write_report

    options = {k: getattr(args, k) for k in REPORT_OPTIONS}
    other = dict(args.other or [])
    print(write_report(args.model, args.image, args.output, other=other, **options))
    return EXIT_OK


def cmd_convert(args) -> int:  # the `convert` subcommand lives in converters/convert.py
    from .converters.convert import run_cli

    return run_cli(args)


COMMANDS = {
    "inspect": cmd_inspect,
    "rewrite": cmd_rewrite,
    "verify": cmd_verify,
    "rows": cmd_rows,
    "columns": cmd_columns,
    "votes": cmd_votes,
    "bias": cmd_bias,
    "svd": cmd_svd,
    "diff": cmd_diff,
    "report": cmd_report,
    "convert": cmd_convert,
}


if __name__ == "__main__":
    sys.exit(main())
