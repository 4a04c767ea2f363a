"""ONNX Runtime: the import (with advice when it is missing), providers and session options."""

from __future__ import annotations

import os
import sys

from ..errors import OnnxscopeError

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

# ONNX Runtime's process-wide logger belongs to the process: a library leaves it to its host
# (every session onnxscope makes logs at fatal only, see session_options); the CLI, which owns
# its process, quiets it (`quiet_process_logs`) so that errors reach the user in one paragraph.
_QUIET = {"process": False}


def quiet_process_logs() -> None:
    """Errors only from ONNX Runtime's process-wide logger (the CLI's setting)."""
    _QUIET["process"] = True
    require_ort().set_default_logger_severity(3)


# The CUDA provider's TF32 convolutions and matmuls round to 10-bit mantissas (about 1e-3
# relative): F(x) and A_x x + c_x would then differ by far more than float32 rounding, so
# onnxscope asks for full float32 unless the caller passes its own provider options.
CUDA_OPTIONS = {"use_tf32": "0"}
DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"],
}
# Session settings that keep ONNX Runtime from rewriting the model into something that computes
# different numbers (see session_options)
EXACT_SESSION_CONFIG = {"session.disable_quant_qdq": "1"}
DEVICE_ENV = "ONNXSCOPE_DEVICE"  # default device when none is given (cpu, cuda)

Provider = str | tuple[str, dict]


def session_options(optimize: bool = True, threads: int | None = None):
    """Session options for onnxscope's graphs. Graph optimizations stay on: the rewritten graphs
    are plain ONNX and every test compares them with the plain model run without optimizations.
    `threads`: ONNX Runtime's intra-op threads (default: its own choice, one per core)."""
    opts = require_ort().SessionOptions()
    opts.log_severity_level = 4  # fatal only: onnxscope reports errors in its own words
    # Keep DequantizeLinear nodes as they are: ORT's QDQ fusions replace DequantizeLinear ->
    # MatMul by MatMulNBits and similar kernels that compute with the quantized integers, which
    # differ from the model's own float result (weight-only int8 MatMul: 5.7e-3 relative), and
    # masks would be decided on that approximation.
    for key, value in EXACT_SESSION_CONFIG.items():
        opts.add_session_config_entry(key, value)
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return opts


def provider_name(provider: Provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def resolve_providers(providers: list[Provider] | str | None) -> list[Provider]:
    """Turn a device name ('cpu', 'cuda') or a provider list into providers this ORT has.

    None means $ONNXSCOPE_DEVICE, else the CPU. A provider this build of ONNX Runtime lacks is
    dropped with one line on stderr, so scripts keep working on a machine without it; a provider
    that is built in but cannot start (no GPU, missing CUDA libraries) is caught when the first
    session is made (`make_session`).
    """
    if providers is None:
        providers = os.environ.get(DEVICE_ENV) or "cpu"
    if isinstance(providers, str):
        if providers.lower() not in DEVICE_PROVIDERS:
            raise OnnxscopeError(f"Unknown device '{providers}'; choose one of cpu, cuda.")
        providers = DEVICE_PROVIDERS[providers.lower()]
    available = set(require_ort().get_available_providers())
    usable = [p for p in providers if provider_name(p) in available]
    dropped = [provider_name(p) for p in providers if provider_name(p) not in available]
    if dropped:
        _notice(
            f"{', '.join(dropped)} not available in this onnxruntime "
            f"({ort.__version__}); running on {_names(usable) or 'CPUExecutionProvider'}."
        )
    return usable or ["CPUExecutionProvider"]


def make_session(model_bytes: bytes, opts, providers: list[Provider], **kwargs):
    """An InferenceSession on `providers`. When ONNX Runtime silently falls back from an
    accelerator it could not start (its own log would be a wall of lines), say so in one line,
    once per process and provider. `kwargs` go to InferenceSession (disabled_optimizers)."""
    # ORT logs a failed provider start as errors before falling back: the CLI silences them
    # (one line below says it); a library's host keeps its own logger setting
    quiet = _QUIET["process"] and any(provider_name(p) != "CPUExecutionProvider" for p in providers)
    if quiet:
        ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(model_bytes, opts, providers=providers, **kwargs)
    finally:
        if quiet:
            ort.set_default_logger_severity(3)
    got = set(session.get_providers())
    for name in _names(providers).split(", "):
        if name and name not in got and name not in _warned:
            _warned.add(name)
            _notice(
                f"{name} could not start (no usable GPU or CUDA libraries); running on "
                f"{', '.join(session.get_providers())}."
            )
    return session


_warned: set[str] = set()


def available_memory(device: str) -> int:
    """Bytes free for probes: the host's available memory, or for CUDA a fixed 4 GiB (ONNX
    Runtime does not report the device's free memory; CUDA's own arena grows on demand)."""
    if device == "cuda":
        return 4 << 30
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def _names(providers) -> str:
    return ", ".join(provider_name(p) for p in providers)


def _notice(text: str) -> None:
    print(f"onnxscope: {text}", file=sys.stderr)
