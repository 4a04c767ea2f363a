"""PyTorch -> ONNX, with the choices onnxscope needs (a fixed input shape, no fused ops)."""

from __future__ import annotations

import os

DEFAULT_OPSET = 17  # LayerNorm is one op from 17; opset 23 would fuse attention


def export(
    module,
    example,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
    input_name: str = "x",
    output_name: str = "y",
) -> str:
    """Export `module` (in eval mode) at `example`'s shape to a single-file ONNX model."""
    import torch

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
                external_data=False,
            )
            program.save(path)
        else:
            torch.onnx.export(
                module,
                (example,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
            )
    return path
