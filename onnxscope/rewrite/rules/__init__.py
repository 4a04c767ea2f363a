"""Every rule module; importing this package fills the registry (`rewrite.registry.RULES`)."""

from . import arithmetic, conv, normalization, pooling, quantized, shape, units  # noqa: F401
