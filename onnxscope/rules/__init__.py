"""Every rule module; importing this package fills the registry (`onnxscope.registry.RULES`)."""

from . import arithmetic, conv, normalization, pooling, shape, units  # noqa: F401
