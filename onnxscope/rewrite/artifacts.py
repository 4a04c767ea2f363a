"""The rewritten graphs of one model and input shape (a plain record), the LinearScope in one
graph for servers (scope.onnx), and the checks every graph passes before it is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnx.compose
from onnx import helper

from ..errors import ModelError
from ..graph.model import graph_names
from ..graph.weights import LOCATION, Weights, checkable

if TYPE_CHECKING:
    from .driver import Walk

PROBE = "probe"
SELECTOR = "selector"
# The adjoint graph holds only nodes onnxscope makes, so it may use a newer opset than the
# model: ScatterElements with reduction="add" (the adjoint of a selection) needs 16.
ADJOINT_MIN_OPSET = 16


@dataclass
class Artifacts:
    """The rewritten graphs for one model and input shape, plus their manifest."""

    mask: onnx.ModelProto
    linear: onnx.ModelProto
    bias: onnx.ModelProto
    manifest: dict
    linear_imports: dict[str, str]  # linear graph input -> mask graph output
    bias_imports: dict[str, str]
    adjoint: onnx.ModelProto | None = None  # None when some op has no adjoint rule yet
    adjoint_imports: dict[str, str] = field(default_factory=dict)
    adjoint_probes: dict[str, str] = field(default_factory=dict)  # model output -> graph input
    adjoint_error: str | None = None
    walk: Walk | None = field(default=None, repr=False)  # what the passes saw (bias_layers)
    probe: str = PROBE  # the linear graph's probe input (renamed when the model uses "probe")
    selector: str = SELECTOR  # the bias-by-layer graph's selector input
    weights: Weights | None = field(default=None, repr=False)  # the data of the graphs' stubs
    # the bias graph's zero probe (an initializer, `bias_values[wrt]`) and its tensor for each
    # of the model's tensors with a linear part: fed x instead of 0, the bias graph is the
    # affine map A_x z + c_x (verify's noise floor of the reconstruction)
    bias_values: dict[str, str] = field(default_factory=dict, repr=False)

    def bias_layers(self) -> tuple[onnx.ModelProto, dict[str, str], list[str]]:
        """The bias-by-layer graph (built on request: see `bias_layers`)."""
        if self.walk is None:
            raise ModelError("These artifacts were loaded from files: no bias-by-layer graph.")
        from .driver import bias_layers

        return bias_layers(self.walk, self.selector)

    def graphs(self, output: str | None = None, readings=None) -> dict[str, onnx.ModelProto]:
        """Every graph `files()` writes, by file name: the four graphs, then the reading graphs
        (scope.onnx, votes.onnx, rows.onnx, columns.onnx: readings.py) reading `output`."""
        return self._graphs_and_readings(output, readings)[0]

    def _graphs_and_readings(self, output: str | None, only=None):
        graphs = {"mask.onnx": self.mask, "linear.onnx": self.linear, "bias.onnx": self.bias}
        if self.adjoint is not None:
            graphs["adjoint.onnx"] = self.adjoint
        readings = self.readings(output, only)
        graphs.update({f"{name}.onnx": r.model for name, r in readings.items()})
        return graphs, readings

    def validate(self, graphs: dict[str, onnx.ModelProto] | None = None) -> None:
        """Check every graph (the ONNX checker, then an ONNX Runtime session); raise a ModelError
        naming the first that fails."""
        for name, model in (graphs or self.graphs()).items():
            validate_graph(model, f"{name.removesuffix('.onnx')} graph ({name})", self.weights)

    def files(
        self, output: str | None = None, readings=None
    ) -> dict[str, bytes | Callable[[str], None]]:
        """The serialized graphs, weights.bin (when a graph has large weights: every graph
        refers to its one copy, as external data) and the manifest, each graph validated first:
        nothing is returned (so nothing written) unless every one loads in ONNX Runtime.
        weights.bin is a function that streams the file to a path (outputs.publish_folder).
        `readings`: which reading graphs (None: every one the model can have)."""
        from .readings import unavailable

        graphs, readings = self._graphs_and_readings(output, readings)
        self.validate(graphs)
        write, size = None, 0
        if self.weights is not None:
            graphs, write, size = self.weights.pack(graphs)
        files: dict = {name: model.SerializeToString() for name, model in graphs.items()}
        manifest = dict(self.manifest)
        manifest["readings"] = {name: r.json() for name, r in readings.items()}
        manifest["readings_unavailable"] = unavailable(self)
        if write is not None:
            files[LOCATION] = write
            manifest["weights"] = {"file": LOCATION, "bytes": size}
        files["manifest.json"] = json.dumps(manifest, indent=2).encode()
        return files

    def scope_prefixes(self) -> dict[str, str]:
        """The prefix of each twin's names in scope.onnx: `linear/`, `bias/`, `adjoint/`, or
        `linear_1/`... where a name of the mask graph (the model's and the masks') starts so."""
        names = graph_names(self.mask.graph)
        prefixes = {}
        for role in ("linear", "bias", "adjoint"):
            prefix, i = f"{role}/", 0
            while any(n.startswith(prefix) for n in names):
                i += 1
                prefix = f"{role}_{i}/"
            prefixes[role] = prefix
        return prefixes

    def scope(self) -> onnx.ModelProto:
        """The LinearScope in one model, for servers: inputs x (and the model's other inputs),
        `linear/probe` z and `adjoint/<probe>` w (both optional); outputs F(x), `linear/<out>` =
        A_x z, `bias/<out>` = c_x and `adjoint/<x>` = A_x^T w (prefixes: `scope_prefixes()`,
        the probe names: `probe`, `adjoint_probes`). See readings.py."""
        from .readings import scope_graph

        return scope_graph(self)

    def readings(self, output: str | None = None, only=None) -> dict:
        """The reading graphs `only` names (readings.py), by reading name; None: every one the
        model can have (asking for one it cannot have is an error saying why)."""
        from .readings import READINGS, reading_graphs, unavailable

        if only is None:
            missing = unavailable(self)
            only = [r for r in READINGS if r not in missing]
        return reading_graphs(self, output, only)


def check_session(model: onnx.ModelProto, role: str, weights: Weights | None = None):
    """A CPU session of one of onnxscope's graphs (no graph optimizations: only loading is
    checked), its stubs fed from `weights`, or a ModelError naming the graph."""
    from ..runtime.sessions import ort, session_options

    def options():
        opts = session_options(optimize=False)
        opts.enable_mem_pattern = False  # (see AnalyzedModel._run_once)
        return opts

    try:
        if weights is None:
            return ort.InferenceSession(
                model.SerializeToString(), options(), providers=["CPUExecutionProvider"]
            )
        return weights.session(model, options, ["CPUExecutionProvider"], ort.InferenceSession)
    except Exception as exc:
        raise ModelError(_invalid(role, "does not load in ONNX Runtime", exc)) from None


def _invalid(role: str, what: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"The {role} onnxscope built for this model {what} ({first}); nothing was written. This "
        "is a bug in onnxscope: please report it with the model."
    )


def validate_graph(model: onnx.ModelProto, role: str, weights: Weights | None = None) -> None:
    """The ONNX checker, then an ONNX Runtime session: a ModelError naming `role` if either
    fails. (The checker's full check is not the arbiter: ONNX's shape inference disagrees with
    the runtime on some ops, and the session runs the runtime's.)"""
    try:
        onnx.checker.check_model(checkable(model))  # (stubs as inputs: it cannot see their data)
    except Exception as exc:
        # deprecated ops the model itself uses (GroupNormalization-18, Upsample) still run
        if "deprecated" not in str(exc).lower():
            raise ModelError(_invalid(role, "is not valid ONNX", exc)) from None
    check_session(model, role, weights)


def _stub_key(t: onnx.TensorProto) -> tuple | None:
    """Where an external-data initializer's data lies (None for inline data)."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return tuple(sorted((e.key, e.value) for e in t.external_data))


def value_info(name: str, dtype, shape) -> onnx.ValueInfoProto:  # shape None: dtype only
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape
    )


def known_shape(vi: onnx.ValueInfoProto) -> bool:
    t = vi.type.tensor_type
    return t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim)


def value_type(vi: onnx.ValueInfoProto) -> tuple[np.dtype, list]:
    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
    if not t.elem_type:
        return np.dtype("O"), dims
    return np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)), dims


def model_like(
    original: onnx.ModelProto, graph: onnx.GraphProto, role: str, min_opset: int = 0
) -> onnx.ModelProto:
    imports = [
        helper.make_opsetid(
            i.domain, max(i.version, min_opset) if i.domain in ("", "ai.onnx") else i.version
        )
        for i in original.opset_import
    ]
    model = helper.make_model(graph, opset_imports=imports)
    # IR 4 lets initializers be other than graph inputs (the rules add constants)
    model.ir_version = max(original.ir_version, 8 if min_opset >= 16 else 4)
    model.producer_name = "onnxscope"
    model.doc_string = f"onnxscope {role} graph"
    del model.metadata_props[:]
    return model


MODE_KEY = "onnxscope.mode"


def stamp_mode(model: onnx.ModelProto, mode: str) -> None:
    """Name the interpreter's mode in a graph's metadata (`onnxscope.mode`: tangent)."""
    kept = [p for p in model.metadata_props if p.key != MODE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=MODE_KEY, value=mode)
