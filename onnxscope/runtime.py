"""ONNX Runtime: the import (with advice when it is missing), providers and session options."""

from __future__ import annotations

import sys

from .errors import OnnxscopeError

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - exercised only on a machine without ORT
    ort = None


def require_ort():
    if ort is None:
        raise OnnxscopeError(
            "ONNX Runtime is not installed. Install onnxscope with one of its runtime extras: "
            "`pip install onnxscope[cpu]` (onnxruntime) or `pip install onnxscope[gpu]` "
            "(onnxruntime-gpu with CUDA); the two cannot be installed together."
        )
    return ort


class _Lazy:
    def __getattr__(self, name):
        return getattr(require_ort(), name)


if ort is None:  # keep `from .runtime import ort` importable; fail on first use
    ort = _Lazy()

if not isinstance(ort, _Lazy):
    ort.set_default_logger_severity(3)  # errors reach the user as exceptions, not log lines

DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def session_options(optimize: bool = True, threads: int | None = None):
    opts = require_ort().SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def resolve_providers(providers: list[str] | str | None) -> list[str]:
    """Turn a device name ('cpu', 'cuda') or provider list into providers this ORT can use.

    A CUDA request on a machine where CUDA is unusable falls back to the CPU with one line on
    stderr, so scripts keep working.
    """
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        if providers.lower() not in DEVICE_PROVIDERS:
            raise OnnxscopeError(f"Unknown device '{providers}'; choose one of cpu, cuda.")
        providers = DEVICE_PROVIDERS[providers.lower()]
    available = set(require_ort().get_available_providers())
    usable = [p for p in providers if p in available]
    dropped = [p for p in providers if p not in available]
    if dropped:
        print(
            f"onnxscope: {', '.join(dropped)} not available in this onnxruntime; "
            f"running on {', '.join(usable) or 'CPUExecutionProvider'}.",
            file=sys.stderr,
        )
    return usable or ["CPUExecutionProvider"]
