"""PyTorch -> ONNX, with the choices onnxscope needs (a fixed input shape, no fused ops)."""

from __future__ import annotations

import os

DEFAULT_OPSET = 17  # LayerNorm is one op from 17; opset 23 would fuse attention


class Exported(str):
    """The path written (a str, as `export` always returned) with what the file declares:
    `opset` (torch's dynamo exporter writes 18 when asked for 17: its translations start there)
    and `external_data` (the weights are in `<path>.data` beside it)."""

    opset: int
    external_data: bool

    def __new__(cls, path: str, opset: int, external_data: bool):
        out = super().__new__(cls, path)
        out.opset, out.external_data = opset, external_data
        return out


def export(
    module,
    example,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
    input_name: str = "x",
    output_name: str = "y",
    external_data: bool = False,
    canonical: bool = False,
    free_batch: bool = False,
) -> Exported:
    """Export `module` (in eval mode) at `example`'s shape to an ONNX model.

    One file unless `external_data` (needed past protobuf's 2 GB; the weights go to
    `<file name>.data` beside it). `canonical=True` also runs onnxscope.rewrite.canonicalize (off by
    default: the file is then exactly torch's export). `free_batch`: the input's and output's
    axis 0 free (named 'batch') instead of fixed at the example's. Returns the path, with the
    opset written."""
    import onnx
    import torch

    from onnxscope.rewrite.canonicalize import canonicalize

    from .common import onnx_opset, write_model

    module = module.eval()
    path = os.fspath(path)
    with torch.no_grad():
        if dynamo:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
                external_data=external_data,
                dynamic_shapes=({0: torch.export.Dim("batch")},) if free_batch else None,
            )
            program.save(path, external_data=external_data)
        else:
            torch.onnx.export(
                module,
                (example,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}}
                if free_batch
                else None,
            )
    if canonical or (external_data and not dynamo):
        model = onnx.load(path)
        write_model(canonicalize(model) if canonical else model, path, external_data)
    written = onnx_opset(onnx.load(path, load_external_data=False))
    return Exported(path, written, external_data)
