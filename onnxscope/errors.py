"""Errors onnxscope raises; each message is one paragraph meant for a person."""

from __future__ import annotations


class OnnxscopeError(Exception):
    """Base class: the CLI prints the message and exits with status 2."""


class ModelError(OnnxscopeError):
    """The model file cannot be read, is not valid ONNX, or uses a feature onnxscope refuses."""


class InputError(OnnxscopeError):
    """An input array has the wrong shape, dtype or values (NaN/Inf)."""


class Unsupported(OnnxscopeError):
    """Raised by a rule's plan when one node cannot be interpreted; the driver collects them."""


class UnsupportedModelError(ModelError):
    """The model contains nodes onnxscope has no rule for; `problems` lists (node, op, why)."""

    def __init__(self, problems: list[tuple[str, str, str]], what: str = "linearization"):
        self.problems = problems
        lines = "; ".join(f"node '{n}' ({op}): {why}" for n, op, why in problems)
        super().__init__(
            f"Cannot interpret this model: {len(problems)} node(s) on the path from the input to "
            f"the outputs have no exact {what}. {lines}. "
            "Run `onnxscope inspect MODEL` for the full table of units and problems."
        )
