"""`onnxscope convert`: any supported source file or folder -> one .onnx file.

    convert(source, output, kind=None, opset=None, nchw=False, input_shape=None) -> Converted

`kind` is found from the source when not given: a folder holding `saved_model.pb` is a SavedModel;
`.keras`, `.h5`, `.hdf5` are Keras files; `.tflite` is TFLite; `.pt`, `.pth`, `.ptl` are TorchScript
(`torch.jit.save`; a plain state dict has no architecture and cannot be converted). Every failure is
a ConversionError with a one-paragraph message; the source is never written to.
"""

from __future__ import annotations

import os
import tempfile

from .common import ConversionError, Converted, finish, line

KINDS = ("keras", "savedmodel", "tflite", "torchscript")
SUFFIXES = {
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
    ".tflite": "tflite",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".ptl": "torchscript",
}


def detect(source: str) -> str:
    """The kind of model at `source`, from its name or folder contents."""
    if os.path.isdir(source):
        if os.path.exists(os.path.join(source, "saved_model.pb")):
            return "savedmodel"
        raise ConversionError(
            f"'{source}' is a folder without saved_model.pb, so not a SavedModel; give a model "
            "file or a SavedModel folder."
        )
    ext = os.path.splitext(source)[1].lower()
    if ext == ".onnx":
        raise ConversionError(f"'{source}' is already ONNX: pass it to the other commands as is.")
    if ext not in SUFFIXES:
        raise ConversionError(
            f"Cannot tell what kind of model '{source}' is from its name; say it with --from "
            f"({'|'.join(KINDS)})."
        )
    return SUFFIXES[ext]


def convert(
    source,
    output,
    kind: str | None = None,
    opset: int | None = None,
    nchw: bool = False,
    input_shape=None,
    free_batch: bool = False,
) -> Converted:
    """Convert `source` to the ONNX file `output` (written atomically). `input_shape`: one shape,
    or {input name: shape}, in the source's own layout, for sizes the model leaves open.
    `free_batch`: leave the batch axis free (Keras and SavedModel sources whose batch is None,
    TorchScript), so that the model takes batches of inputs."""
    source, output = os.fspath(source), os.fspath(output)
    if not os.path.exists(source):
        raise ConversionError(f"'{source}' does not exist.")
    _check_output(source, output)
    kind = kind or detect(source)
    if kind not in KINDS:
        raise ConversionError(f"Unknown source kind '{kind}'; expected one of {', '.join(KINDS)}.")
    if kind == "torchscript":
        if nchw:
            raise ConversionError("--nchw is for TensorFlow sources; TorchScript is NCHW already.")
        return _from_torchscript(source, output, opset, input_shape, free_batch)
    from . import tensorflow as tfc

    kw = {"nchw": nchw, "opset": opset or tfc.DEFAULT_OPSET}
    if kind == "tflite":
        if input_shape is not None or free_batch:
            raise ConversionError(
                "A TFLite model's input shapes are fixed; drop --input-shape and --free-batch."
            )
        return tfc.from_tflite(source, output, **kw)
    kw["free_batch"] = free_batch
    if kind == "savedmodel":
        return tfc.from_saved_model(source, output, input_shape=input_shape, **kw)
    return tfc.from_keras_file(source, output, input_shape=input_shape, **kw)


def _check_output(source: str, output: str) -> None:
    out = os.path.abspath(output)
    src = os.path.abspath(source)
    inside = os.path.isdir(src) and os.path.commonpath([src, out]) == src
    if out == src or inside or (os.path.exists(out) and os.path.samefile(out, src)):
        raise ConversionError(
            f"Writing '{output}' would overwrite or alter the source '{source}'; choose another -o."
        )
    if os.path.isdir(out):
        raise ConversionError(f"'{output}' is a folder; -o takes the path of the .onnx file.")
    if not os.path.isdir(os.path.dirname(out)):
        raise ConversionError(f"The folder of '{output}' does not exist.")


def _from_torchscript(source, output, opset, input_shape, free_batch=False) -> Converted:
    """A TorchScript module (torch.jit.save) through torch's legacy exporter at a given shape."""
    if input_shape is None or isinstance(input_shape, dict) and len(input_shape) != 1:
        raise ConversionError(
            "A TorchScript file carries no input shape: give it with --input-shape x=1x3x224x224."
        )
    shape = next(iter(input_shape.values())) if isinstance(input_shape, dict) else input_shape
    try:
        import onnx
        import torch

        from .pytorch import DEFAULT_OPSET, export
    except ImportError as exc:
        raise ConversionError(
            f"TorchScript conversion needs PyTorch ({exc}): `pip install 'onnxscope[torch]'`."
        ) from None
    with tempfile.TemporaryDirectory() as tmp:  # torch writes in place: never at `output`
        try:
            module = torch.jit.load(source, map_location="cpu")
            written = export(
                module,
                torch.zeros(tuple(shape)),
                os.path.join(tmp, "m.onnx"),
                opset or DEFAULT_OPSET,
                free_batch=free_batch,
            )
        except Exception as exc:  # noqa: BLE001 - torch's many error types, one message
            raise ConversionError(
                f"PyTorch could not load or export '{source}' as TorchScript at shape "
                f"{list(shape)}: {line(exc)}"
            ) from None
        return finish(onnx.load(written), output)


# -- the `onnxscope convert` subcommand (onnxscope/cli.py registers it) --------------------------
def add_parser(sub) -> None:
    sp = sub.add_parser(
        "convert",
        help="convert a Keras, SavedModel, TFLite or TorchScript model to ONNX",
        description="Convert a Keras file, SavedModel folder, TFLite flatbuffer or TorchScript "
        "file to one .onnx file (written atomically; the source is never modified).",
    )
    sp.add_argument("source", help="model file, or SavedModel folder (never modified)")
    sp.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    sp.add_argument("--from", dest="kind", choices=KINDS, help="source kind (default: detected)")
    sp.add_argument("--opset", type=int, help="ONNX opset to write (default 17)")
    sp.add_argument(
        "--nchw",
        action="store_true",
        help="TensorFlow sources: make rank-4 inputs and outputs NCHW (default: NHWC, as in TF)",
    )
    sp.add_argument(
        "--free-batch",
        action="store_true",
        help="leave the batch axis free (for batches of inputs; default: fixed at 1)",
    )
    sp.add_argument(
        "--input-shape",
        metavar="[NAME=]1x64x64x3",
        help="full input shape in the source's layout, where the model leaves sizes open",
    )


def _shape(text: str | None):
    if text is None:
        return None
    name, _, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise ConversionError(f"--input-shape expects [NAME=]1x64x64x3, got '{text}'.") from None
    return {name: shape} if name else shape


def run_cli(args) -> int:
    done = convert(
        args.source,
        args.output,
        args.kind,
        args.opset,
        args.nchw,
        _shape(args.input_shape),
        args.free_batch,
    )
    shapes = ", ".join(
        f"{k} {list(v)}" + (f" {done.layouts[k]}" if k in done.layouts else "")
        for k, v in done.inputs.items()
    )
    print(f"Wrote {done.path} (opset {done.opset}; input {shapes}).")
    if done.canonicalized:
        print(f"Canonicalized: {done.canonicalized}.")
    return 0
