"""What every front-end shares: the error type, the result record, and the last steps (canonicalize,
record image layouts, check, write atomically)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field

import onnx

from onnxscope.errors import ModelError
from onnxscope.rewrite.canonicalize import canonicalize

LAYOUT_KEY = "onnxscope.layout"  # metadata: JSON {tensor name: "NCHW" | "NHWC"} for rank-4 I/O


class ConversionError(ModelError):
    """The source could not be converted; the message says why and what to do (one paragraph)."""


@dataclass
class Converted:
    """What a conversion wrote: the file, the opset it declares, input shapes, image layouts and
    what canonicalization changed."""

    path: str
    opset: int
    inputs: dict[str, tuple[int, ...]]
    layouts: dict[str, str] = field(default_factory=dict)
    canonicalized: str = ""


def onnx_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset the model declares."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def finish(model: onnx.ModelProto, path, layouts: dict[str, str] | None = None) -> Converted:
    """Canonicalize, record `layouts`, check and write `model` to `path` atomically."""
    model = canonicalize(model)
    props = {p.key: p.value for p in model.metadata_props}
    if layouts:
        props[LAYOUT_KEY] = json.dumps(layouts)
    onnx.helper.set_model_props(model, props)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the converter wrote something invalid
        raise ConversionError(f"The converter wrote an invalid ONNX model: {line(exc)}") from None
    write_model(model, path)
    inputs = {
        vi.name: tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
        for vi in model.graph.input
    }
    return Converted(
        os.fspath(path),
        onnx_opset(model),
        inputs,
        dict(layouts or {}),
        props.get("onnxscope.canonicalize", ""),
    )


def layouts(model: onnx.ModelProto) -> dict[str, str]:
    """The layout a converter recorded for each rank-4 input and output ({} when none)."""
    props = {p.key: p.value for p in model.metadata_props}
    return json.loads(props.get(LAYOUT_KEY, "{}"))


def write_model(model: onnx.ModelProto, path, external_data: bool | None = None) -> None:
    """Write into a temporary folder beside `path`, then rename into place (a reader never sees
    half a file). With external data (by default: past protobuf's 2 GB) the weights go to
    `<name>.data` beside the file, renamed before the model that points to it."""
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    large = external_data
    if large is None:
        large = model.ByteSize() > 2**31 - 2**24  # protobuf's limit, with room for the graph
    with tempfile.TemporaryDirectory(prefix=".onnxscope-", dir=folder) as tmp:
        data = name + ".data"
        onnx.save_model(model, os.path.join(tmp, name), save_as_external_data=large, location=data)
        if large:
            os.replace(os.path.join(tmp, data), os.path.join(folder, data))
        os.replace(os.path.join(tmp, name), path)


def line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit] + "…" if len(text) > limit else text
