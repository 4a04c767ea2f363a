"""onnxscope: exact linear interpreters (A_x z + c_x) of ONNX models, after Navarrete Michelini
et al., "A Tour of Convolutional Networks Guided by Linear Interpreters" (ICCV 2019)."""

from .errors import InputError, ModelError, OnnxscopeError, UnsupportedModelError
from .runtime.compare import Comparison, compare
from .runtime.scope import Interpretation, LinearScope

__version__ = "0.1.0"

__all__ = [
    "LinearScope",
    "Interpretation",
    "compare",
    "Comparison",
    "OnnxscopeError",
    "ModelError",
    "InputError",
    "UnsupportedModelError",
    "__version__",
]
