"""What a server serves: one `ServedModel` per graph, the plain model (`NAME`) and each of its
reading graphs (`NAME.votes`, `NAME.rows`, `NAME.columns`, `NAME.scope`), each an ONNX Runtime
session at one input shape fixed at start, with the tensors it takes and gives and the checks
every request passes before it runs (so a bad request is a client error, never a rewrite)."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from ..errors import InputError, OnnxscopeError
from ..graph.model import AnalyzedModel, load_light
from ..rewrite.readings import READINGS, TensorSpec, reading_graphs
from ..runtime.sessions import make_session, resolve_providers, session_options

# Open Inference Protocol datatype strings (the tensor data types of the protocol)
DATATYPES = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}
DTYPES = {v: k for k, v in DATATYPES.items()}
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a served model's name (also a URL segment)


class RequestError(OnnxscopeError):
    """A request the server refuses: `status` is its HTTP status (400, 401, 404, 413)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def datatype(dtype) -> str:
    """The protocol's datatype string of a numpy dtype (an InputError for one it has none)."""
    try:
        return DATATYPES[np.dtype(dtype)]
    except KeyError:
        raise InputError(f"dtype {np.dtype(dtype)} has no Open Inference Protocol type.") from None


def spec_json(spec: TensorSpec) -> dict:
    """A tensor's metadata as the protocol gives it: free dims are -1."""
    shape = [d if isinstance(d, int) else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": datatype(spec.dtype), "shape": shape}


class ServedModel:
    """One served graph: its name, tensors (TensorSpec; a str dim is free, and inputs sharing one
    name must agree on it), a session, and `infer`, which checks a request completely first."""

    platform = "onnxruntime_onnx"
    artifacts = None  # the plain model's rewrite (Artifacts), kept for the explorer
    read_output = None  # the plain model's output its readings read

    def __init__(
        self,
        name: str,
        model: onnx.ModelProto,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        weights=None,
        providers: list | str | None = "cpu",
        max_batch: int = 64,
        index_sizes: Mapping[str, int] | None = None,
        reading: str | None = None,
        threads: int | None = None,
    ):
        if not NAME.match(name):
            raise InputError(f"Model name {name!r}: use letters, digits, '_', '-' and '.'.")
        self.name, self.model, self.weights = name, model, weights
        self.inputs = {s.name: s for s in inputs}
        self.outputs = {s.name: s for s in outputs}
        self.max_batch = max_batch
        self.index_sizes = dict(index_sizes or {})  # INT64 index inputs -> the size they index
        self.reading = reading  # None for the plain model
        self.providers = resolve_providers(providers)
        self.threads = threads

    def _options(self):
        options = session_options(True, threads=self.threads)
        # a server runs many sessions in turn: intra-op threads left spinning after one run take
        # the cores the next session needs (ResNet-18 on 2 cores: plain 14 -> 26 ms)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    @functools.cached_property
    def session(self):
        if self.weights is None:
            return make_session(self.model.SerializeToString(), self._options(), self.providers)
        return self.weights.session(self.model, self._options, self.providers)

    @property
    def device(self) -> str:
        return "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"

    def metadata(self) -> dict:
        """The protocol's model metadata object."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": self.platform,
            "inputs": [spec_json(s) for s in self.inputs.values()],
            "outputs": [spec_json(s) for s in self.outputs.values()],
        }

    def check(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The request's tensors checked against this model's (names, dtypes, shapes, shared free
        dims, K <= max_batch, indices in range, finite floats): a RequestError (400) naming the
        tensor and what was wrong, or the feeds as C-ordered arrays."""
        unknown = [n for n in feeds if n not in self.inputs]
        if unknown:
            raise RequestError(
                f"Model '{self.name}' has no input {unknown[0]!r}; its inputs are "
                f"{list(self.inputs)}."
            )
        missing = [n for n, s in self.inputs.items() if n not in feeds and not s.optional]
        if missing:
            raise RequestError(f"Model '{self.name}': input {missing[0]!r} is missing.")
        free: dict[str, tuple[int, str]] = {}
        checked = {}
        for name, value in feeds.items():
            spec, array = self.inputs[name], np.asarray(value)
            if array.dtype != spec.dtype:
                raise RequestError(
                    f"Input {name!r} has datatype {_datatype_or_dtype(array.dtype)}; model "
                    f"'{self.name}' expects {datatype(spec.dtype)}."
                )
            if len(array.shape) != len(spec.shape) or any(
                isinstance(d, int) and d != n for d, n in zip(spec.shape, array.shape)
            ):
                raise RequestError(
                    f"Input {name!r} has shape {list(array.shape)}; model '{self.name}' expects "
                    f"{spec_json(spec)['shape']} (-1: any size)."
                )
            for d, n in zip(spec.shape, array.shape):
                if isinstance(d, int):
                    continue
                if n > self.max_batch:
                    raise RequestError(
                        f"Input {name!r} asks for {n} probes or indices; this server answers at "
                        f"most {self.max_batch} per request (--max-batch)."
                    )
                if d in free and free[d][0] != n:
                    raise RequestError(
                        f"Inputs {free[d][1]!r} and {name!r} must have the same size along their "
                        f"first axis ({free[d][0]} != {n})."
                    )
                free.setdefault(d, (n, name))
            if array.dtype.kind == "f" and array.size and not np.isfinite(array).all():
                raise RequestError(f"Input {name!r} contains NaN or infinite values.")
            size = self.index_sizes.get(name)
            if (
                size is not None
                and array.size
                and not (-size <= int(array.min()) and int(array.max()) < size)
            ):
                raise RequestError(
                    f"Input {name!r} holds an index out of range: valid flat indices are "
                    f"{-size} to {size - 1}."
                )
            checked[name] = np.asarray(array, order="C")  # (ascontiguousarray makes 0-d 1-d)
        return checked

    def infer(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Check the request, run the session once and return the requested outputs (all when
        None) by name. A RequestError for a client error; anything else is a server fault."""
        wanted = list(self.outputs) if not outputs else list(outputs)
        unknown = [n for n in wanted if n not in self.outputs]
        if unknown:
            raise RequestError(
                f"Model '{self.name}' has no output {unknown[0]!r}; its outputs are "
                f"{list(self.outputs)}."
            )
        feeds = self.check(feeds)
        values = self.session.run(wanted, feeds)
        return dict(zip(wanted, values))

    def files(self) -> dict:
        """This graph as files for a model repository: {"model.onnx": bytes} plus, for a model
        with large weights, the weights file the graph refers to ({name: writer(path)})."""
        if self.weights is None:
            return {"model.onnx": self.model.SerializeToString()}
        graphs, write, size = self.weights.pack({"model.onnx": self.model})
        files: dict = {"model.onnx": graphs["model.onnx"].SerializeToString()}
        if write is not None:
            from ..graph.weights import LOCATION

            files[LOCATION] = write
        return files


def _datatype_or_dtype(dtype) -> str:
    return DATATYPES.get(np.dtype(dtype), str(np.dtype(dtype)))


def load(
    path: str | os.PathLike | onnx.ModelProto,
    name: str | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    readings: Sequence[str] = READINGS,
    output: str | None = None,
    wrt: str | None = None,
    providers: list | str | None = "cpu",
    max_batch: int = 64,
    threads: int | None = None,
    logits: bool = False,
    mode: str = "secant",
) -> list[ServedModel]:
    """The plain model and its readings (`READINGS`, or a subset) at one input shape (the given
    shapes, else the model's static ones with a free batch dim at 1), rewritten once, here.
    `output`: the model output the votes and rows read (default: the first). `logits`: serve
    outputs computed by a Softmax or LogSoftmax as the logits under them (NAME_logits).
    `mode`: the interpreter, "secant" or "tangent" (LinearScope's `mode`). A
    reading the model cannot have (no adjoint: votes and rows) is an OnnxscopeError naming
    why."""
    from ..runtime.scope import LinearScope

    unknown = [r for r in readings if r not in READINGS]
    if unknown:
        raise InputError(f"Unknown reading {unknown[0]!r}; the readings are {list(READINGS)}.")
    if name is None:
        if isinstance(path, onnx.ModelProto):
            raise InputError("A served ModelProto needs a name.")
        name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    scope = LinearScope(path, wrt=wrt, providers="cpu", logits=logits, mode=mode)
    if output is not None and output in scope.cut:
        output = f"{output}_logits"
    shapes = dict(input_shapes or {})
    analyzed: AnalyzedModel = scope.analyze(shapes)
    inputs = [
        TensorSpec(n, np.dtype(analyzed.dtype(n)), tuple(s))
        for n, s in analyzed.input_shapes.items()
    ]
    outputs = [
        TensorSpec(n, np.dtype(analyzed.dtype(n)), tuple(analyzed.shape(n)))
        for n in analyzed.outputs
    ]
    common = {"providers": providers, "max_batch": max_batch, "threads": threads}
    served = [ServedModel(name, scope.model, inputs, outputs, weights=scope._weights, **common)]
    if readings:
        artifacts = scope.artifacts(analyzed.input_shapes)
        graphs = reading_graphs(artifacts, output=output, only=readings)
        served[0].artifacts = artifacts
        served[0].read_output = graphs[readings[0]].output
        for reading in readings:
            graph = graphs[reading]
            served.append(
                ServedModel(
                    f"{name}.{reading}",
                    graph.model,
                    graph.inputs,
                    graph.outputs,
                    weights=artifacts.weights,
                    index_sizes=graph.index_sizes,
                    reading=reading,
                    **common,
                )
            )
    return served


def load_all(
    paths: Sequence[str],
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    output: str | None = None,
    wrt: str | None = None,
    **options,
) -> list[ServedModel]:
    """`load` of each MODEL file (named after the file), giving each of `input_shapes`, `output`
    and `wrt` to the models that have that tensor (one no model has is an InputError)."""
    names = [model_name(p) for p in paths]
    if len(set(names)) < len(names):
        raise InputError("Two MODEL files have the same name; rename one of them.")
    shapes = dict(input_shapes or {})
    tensors = {}
    for path in paths:
        graph = load_light(path)[0].graph  # (its errors name the file)
        tensors[path] = ({i.name for i in graph.input}, {o.name for o in graph.output})
    wanted = [(n, 0, "input") for n in shapes] + [(wrt, 0, "input"), (output, 1, "output")]
    for tensor, kind, what in wanted:
        if tensor is not None and not any(tensor in t[kind] for t in tensors.values()):
            raise InputError(f"No MODEL has an {what} named '{tensor}'.")
    served = []
    for path, name in zip(paths, names):
        ins, outs = tensors[path]
        served += load(
            path,
            name,
            input_shapes={n: s for n, s in shapes.items() if n in ins},
            output=output if output in outs else None,
            wrt=wrt if wrt in ins else None,
            **options,
        )
    return served


# -- the options `serve` and `triton` share --------------------------------------------------------


def add_model_arguments(sp) -> None:
    """MODEL ..., --input-shape, --readings, --output, --wrt, --logits and --mode (see
    `load_all`)."""
    from ..cli import add_input_shape_option, add_mode_option

    sp.add_argument("model", nargs="*", help="the .onnx model(s) (never modified)")
    add_input_shape_option(sp, "fix the shape of an input (of every model that has it)")
    sp.add_argument(
        "--readings",
        help=f"comma-separated readings (default: {','.join(READINGS)}; '' for the plain "
        "model only)",
    )
    sp.add_argument(
        "--output",
        "--output-name",
        dest="output_name",
        help="the model output the votes, rows and columns read (default: the first)",
    )
    sp.add_argument("--wrt", help="the input to interpret (default: the first float input)")
    sp.add_argument(
        "--logits",
        action="store_true",
        help="serve outputs computed by a Softmax or LogSoftmax as their logits (NAME_logits)",
    )
    add_mode_option(sp)


def model_name(path) -> str:
    """A served model's name: its file's name without the suffix."""
    return os.path.splitext(os.path.basename(os.fspath(path)))[0]
