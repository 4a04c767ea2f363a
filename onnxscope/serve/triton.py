"""`onnxscope triton`: the plain model and its reading graphs as a Triton model repository, and a
check of such a repository that needs no Triton server.

    REPO/
      onnxscope-triton.json       the set's index (which models, read by the check; Triton looks
                                  only at the repository's folders)
      NAME/config.pbtxt           Triton's ModelConfig, text format
      NAME/1/model.onnx           the graph (+ weights.bin beside it for a large model)
      NAME.votes/..., NAME.rows/..., NAME.columns/..., NAME.scope/...

Every config is built as `tritonclient`'s own `model_config_pb2.ModelConfig` (platform
`onnxruntime_onnx`, `max_batch_size: 0`, -1 for a free dim such as K, `optional: true` for the
scope reading's probes, one `instance_group`) and written with protobuf's `text_format`. The
repository is written as one set (onnxscope/files/outputs.py): all or nothing, replacing only an
earlier repository onnxscope wrote.

`check_repository` parses each config.pbtxt with the same protobuf, compares its tensors (names,
datatypes, dims) with the ONNX file's, and runs each model.onnx under ONNX Runtime at the
config's shapes (free dims at K = 2; optional inputs omitted, then given), comparing what comes
out with the config too. Needs the `serve` extra (tritonclient)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..files.outputs import OutputSet

INDEX = "onnxscope-triton.json"
REPOSITORY = OutputSet("triton repository", INDEX)
CONFIG = "config.pbtxt"
VERSION = "1"
MODEL_FILE = "model.onnx"  # Triton's default_model_filename for onnxruntime_onnx
PLATFORM = "onnxruntime_onnx"
CHECK_K = 2  # the size a free dim gets in the check's runs
KINDS = {"cpu": "KIND_CPU", "cuda": "KIND_GPU"}


def _pb():
    """Triton's model-config protobuf module (the serve extra)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:  # pragma: no cover - depends on the installation
        raise InputError(
            "`onnxscope triton` needs tritonclient: pip install 'onnxscope[serve]'."
        ) from None
    return model_config_pb2


# -- writing ---------------------------------------------------------------------------------------


def model_config(served, *, device: str = "cpu", instances: int = 1):
    """The Triton ModelConfig of one ServedModel (onnxscope.serve.models)."""
    pb = _pb()
    if device not in KINDS:
        raise InputError(f"Unknown device {device!r}; use one of {list(KINDS)}.")
    if instances < 1:
        raise InputError(f"--instances must be 1 or more, not {instances}.")
    config = pb.ModelConfig(name=served.name, platform=PLATFORM, max_batch_size=0)
    for spec in served.inputs.values():
        tensor = config.input.add(name=spec.name, optional=spec.optional)
        _set_tensor(pb, tensor, spec)
    for spec in served.outputs.values():
        _set_tensor(pb, config.output.add(name=spec.name), spec)
    kind = pb.ModelInstanceGroup.Kind.Value(KINDS[device])
    config.instance_group.add(count=instances, kind=kind)
    return config


def _set_tensor(pb, tensor, spec) -> None:
    from .models import datatype

    tensor.data_type = pb.DataType.Value("TYPE_" + datatype(spec.dtype))
    dims = [d if isinstance(d, int) else -1 for d in spec.shape]
    if dims:
        tensor.dims.extend(dims)
    else:  # Triton's dims are never empty: a scalar is [1], reshaped to [] for the model
        tensor.dims.append(1)
        tensor.reshape.SetInParent()


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def repository_files(
    models: Sequence, *, device: str = "cpu", instances: int = 1, sources: Mapping[str, str] = {}
) -> dict:
    """{path in the repository: bytes or writer} for the ServedModels `models`, with the index.
    `sources`: model name -> the file it came from (recorded in the index)."""
    names = [m.name for m in models]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(
            f"Two models would both be named '{twice[0]}' in the repository; give the model "
            "files different names."
        )
    files: dict = {}
    entries = {}
    for served in models:
        config = model_config(served, device=device, instances=instances)
        files[f"{served.name}/{CONFIG}"] = config_text(config).encode("utf-8")
        for name, content in served.files().items():
            files[f"{served.name}/{VERSION}/{name}"] = content
        base = served.name[: -len(served.reading) - 1] if served.reading else served.name
        entries[served.name] = {
            "reading": served.reading,
            "source": sources.get(base),
            "index_sizes": dict(served.index_sizes),
        }
    files[INDEX] = {
        "format": "onnxscope Triton model repository",
        "platform": PLATFORM,
        "device": device,
        "instances": instances,
        "models": entries,
    }
    return files


def write_repository(
    models: Sequence,
    path,
    *,
    device: str = "cpu",
    instances: int = 1,
    sources: Mapping[str, str] = {},
) -> str:
    """Write the repository of `models` at `path` as one set (see onnxscope/files/outputs.py) and
    return its absolute path; the `sources` files are never written."""
    files = repository_files(models, device=device, instances=instances, sources=sources)
    guarded = [("input model", p) for p in sources.values()]
    return REPOSITORY.publish(path, files, sources=guarded)


# -- checking --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a repository: the file (relative to the repository), the tensor if
    one, and what differs."""

    file: str
    message: str
    tensor: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}: tensor '{self.tensor}'" if self.tensor else self.file
        return f"{where}: {self.message}"


@dataclass
class RepositoryCheck:
    """What `check_repository` found: the models it checked, the ONNX Runtime runs it made and
    the problems (none: `ok`)."""

    path: str
    models: list[str] = field(default_factory=list)
    runs: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_repository(path, *, k: int = CHECK_K, seed: int = 0) -> RepositoryCheck:
    """Check the Triton model repository at `path` without a server (see the module docstring):
    every model folder, its config.pbtxt against Triton's ModelConfig and against its ONNX
    file(s), and one or two ONNX Runtime runs of each."""
    path = os.fspath(path)
    result = RepositoryCheck(os.path.abspath(path))
    if not os.path.isdir(path):
        raise InputError(f"'{path}' is not a folder; give the model repository's folder.")
    index = _read_index(path)
    folders = sorted(e for e in os.listdir(path) if os.path.isdir(os.path.join(path, e)))
    if not folders:
        result.problems.append(Problem(".", "the repository holds no model folder"))
    rng = np.random.default_rng(seed)
    for name in folders:
        result.models.append(name)
        sizes = index.get(name, {}).get("index_sizes", {})
        _check_model(path, name, sizes, k, rng, result)
    for name in index:
        if name not in folders:
            result.problems.append(Problem(INDEX, f"lists the model '{name}', which has no folder"))
    return result


def _read_index(path: str) -> dict:
    try:
        with open(os.path.join(path, INDEX), encoding="utf-8") as f:
            models = json.load(f).get("models", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return models if isinstance(models, dict) else {}


@dataclass
class _Tensor:
    """A config tensor as the check uses it: numpy dtype, the request's dims (full shape) and the
    shape the ONNX graph sees (the reshape where there is one)."""

    name: str
    dtype: np.dtype | None
    dims: list[int]
    graph_dims: list[int]
    optional: bool = False


def _check_model(root: str, name: str, index_sizes: dict, k: int, rng, result) -> None:
    from google.protobuf import text_format

    pb = _pb()
    problems = result.problems
    config_file = f"{name}/{CONFIG}"
    try:
        with open(os.path.join(root, config_file), encoding="utf-8") as f:
            config = text_format.Parse(f.read(), pb.ModelConfig())
    except FileNotFoundError:
        problems.append(Problem(config_file, "missing (onnxscope writes one for every model)"))
        return
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        problems.append(Problem(config_file, f"is not a Triton ModelConfig: {exc}"))
        return
    before = len(problems)
    if config.name and config.name != name:
        problems.append(
            Problem(config_file, f"name is '{config.name}' but the model's folder is '{name}'")
        )
    if config.platform != PLATFORM and config.backend != "onnxruntime":
        got = config.platform or config.backend or "none"
        problems.append(Problem(config_file, f"platform is '{got}', expected '{PLATFORM}'"))
    if config.max_batch_size < 0:
        problems.append(Problem(config_file, "max_batch_size is negative"))
    inputs = _tensors(config.input, config, config_file, problems, pb)
    outputs = _tensors(config.output, config, config_file, problems, pb)
    versions = sorted(
        (v for v in os.listdir(os.path.join(root, name)) if _is_version(root, name, v)), key=int
    )
    if not versions:
        problems.append(Problem(f"{name}/", "has no version folder (such as '1/')"))
    filename = config.default_model_filename or MODEL_FILE
    for version in versions:
        model_file = f"{name}/{version}/{filename}"
        if not os.path.isfile(os.path.join(root, model_file)):
            problems.append(Problem(model_file, "missing"))
            continue
        graph = _graph_tensors(root, model_file, problems)
        if graph is None:
            continue
        _compare(config_file, model_file, inputs, outputs, *graph, problems)
        if len(problems) == before:  # a run of a model already known wrong says nothing more
            _run(root, model_file, inputs, outputs, index_sizes, k, rng, result)


def _is_version(root: str, name: str, entry: str) -> bool:
    """Triton's version folders: numeric names not starting with 0."""
    return (
        entry.isdigit()
        and not entry.startswith("0")
        and os.path.isdir(os.path.join(root, name, entry))
    )


def _tensors(entries, config, config_file: str, problems: list, pb) -> dict[str, _Tensor]:
    from .models import DTYPES

    batch = [-1] if config.max_batch_size > 0 else []
    out: dict[str, _Tensor] = {}
    for t in entries:
        if t.name in out:
            problems.append(Problem(config_file, "is listed twice", t.name))
            continue
        type_name = pb.DataType.Name(t.data_type)
        dtype = DTYPES.get(type_name.removeprefix("TYPE_"))
        if dtype is None:
            problems.append(
                Problem(config_file, f"data_type {type_name} has no numpy type", t.name)
            )
        if not t.dims:
            problems.append(
                Problem(
                    config_file, "has no dims (Triton needs at least one; [1] for a scalar)", t.name
                )
            )
        if any(d < -1 for d in t.dims):
            problems.append(Problem(config_file, f"dims {list(t.dims)}: a size below -1", t.name))
        dims = batch + list(t.dims)
        graph_dims = batch + list(t.reshape.shape) if t.HasField("reshape") else dims
        optional = getattr(t, "optional", False)
        out[t.name] = _Tensor(t.name, dtype, dims, graph_dims, optional)
    return out


def _graph_tensors(root: str, model_file: str, problems: list):
    """(inputs, inputs with a default, outputs) of an ONNX file: {name: (dtype, dims)}, a dim
    None where free; None when the file is not ONNX."""
    import onnx

    try:
        model = onnx.load(os.path.join(root, model_file), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not ONNX
        problems.append(Problem(model_file, f"is not an ONNX model: {exc}"))
        return None
    g = model.graph
    defaults = {t.name for t in g.initializer}

    def described(vi):
        t = vi.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
        dims = None
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        return dtype, dims

    inputs = {vi.name: described(vi) for vi in g.input}
    outputs = {vi.name: described(vi) for vi in g.output}
    return inputs, {n for n in inputs if n in defaults}, outputs


def _compare(config_file, model_file, inputs, outputs, g_in, g_defaults, g_out, problems) -> None:
    """Names, datatypes and dims of the config against the ONNX graph's."""
    for name in g_in:
        if name not in inputs and name not in g_defaults:
            problems.append(
                Problem(config_file, f"is an input of {model_file} but not in the config", name)
            )
    for kind, tensors, graph in (("input", inputs, g_in), ("output", outputs, g_out)):
        for t in tensors.values():
            if t.name not in graph:
                problems.append(
                    Problem(
                        config_file,
                        f"is not an {kind} of {model_file} (its {kind}s: {sorted(graph)})",
                        t.name,
                    )
                )
                continue
            if kind == "input" and t.optional and t.name not in g_defaults:
                problems.append(
                    Problem(
                        config_file,
                        f"is optional in the config but {model_file} has no default for it",
                        t.name,
                    )
                )
            dtype, dims = graph[t.name]
            if t.dtype is not None and dtype != t.dtype:
                problems.append(
                    Problem(
                        config_file,
                        f"data_type is {_type(t.dtype)}, {model_file} has {_type(dtype)}",
                        t.name,
                    )
                )
            if dims is not None and not _dims_match(t.graph_dims, dims):
                shown = [-1 if d is None else d for d in dims]
                problems.append(
                    Problem(
                        config_file,
                        f"dims {t.graph_dims} differ from {model_file}'s shape {shown} (-1: free)",
                        t.name,
                    )
                )


def _dims_match(config: list[int], graph: list) -> bool:
    """A free config dim must be free in the graph; a fixed one must match a fixed graph dim (a
    fixed config dim over a free graph dim only narrows what Triton accepts)."""
    if len(config) != len(graph):
        return False
    return all(g == c if g is not None else True for c, g in zip(config, graph)) and all(
        g is None for c, g in zip(config, graph) if c == -1
    )


def _type(dtype) -> str:
    from .models import DATATYPES

    return f"TYPE_{DATATYPES[dtype]}" if dtype in DATATYPES else str(dtype)


def _run(root, model_file, inputs, outputs, index_sizes, k, rng, result) -> None:
    """Run the model under ONNX Runtime at the config's shapes, without its optional inputs (if
    any) and with all, and compare the outputs with the config."""
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # not the warning on the optional inputs' defaults
        session = ort.InferenceSession(
            os.path.join(root, model_file), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own exception types for a graph it cannot load
        result.problems.append(Problem(model_file, f"does not load in ONNX Runtime: {exc}"))
        return
    feeds = {t.name: _value(t, k, index_sizes.get(t.name), rng) for t in inputs.values()}
    required = {n: v for n, v in feeds.items() if not inputs[n].optional}
    runs = [("without its optional inputs", required)] if len(required) < len(feeds) else []
    runs.append(("with every input" if runs else "", feeds))
    for how, fed in runs:
        label = f"{model_file} run {how}".rstrip()
        try:
            values = session.run(list(outputs), fed)
        except Exception as exc:  # ORT's errors (shapes, types, indices) are its own classes
            result.problems.append(Problem(model_file, f"failed to run {how}: {exc}".rstrip()))
            continue
        result.runs += 1
        for t, value in zip(outputs.values(), values):
            if value.dtype != t.dtype:
                result.problems.append(
                    Problem(
                        label, f"gave {_type(value.dtype)}, config says {_type(t.dtype)}", t.name
                    )
                )
            if len(value.shape) != len(t.graph_dims) or any(
                d not in (-1, n) for d, n in zip(t.graph_dims, value.shape)
            ):
                result.problems.append(
                    Problem(
                        label, f"gave shape {list(value.shape)}, config dims {t.graph_dims}", t.name
                    )
                )


def _value(t: _Tensor, k: int, size: int | None, rng) -> np.ndarray:
    """An input at the config's shape (-1 -> k): N(0, 1) floats; indices in range where the index
    says what they index, else zeros."""
    shape = [k if d == -1 else d for d in t.graph_dims]
    dtype = t.dtype if t.dtype is not None else np.dtype(np.float32)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu" and size:
        return rng.integers(0, size, shape).astype(dtype)
    return np.zeros(shape, dtype)


# -- the command -----------------------------------------------------------------------------------


def add_parser(sub) -> None:
    from .models import add_model_arguments

    sp = sub.add_parser(
        "triton",
        help="write a Triton model repository (the model and its readings), or --check one",
        description="Write the model and its reading graphs as a Triton Inference Server model "
        "repository (REPO/NAME[.reading]/config.pbtxt and 1/model.onnx), or check one without a "
        "server (--check REPO). Exit status: 0 ok; 1 the check found problems; 2 an error.",
    )
    sp.add_argument(
        "-o",
        "--repository",
        dest="repository",
        help="the repository folder: created, or replaced atomically if it holds an earlier one",
    )
    sp.add_argument(
        "--check",
        metavar="REPO",
        help="instead: check the repository REPO (configs against the ONNX files, runs)",
    )
    sp.add_argument(
        "--device", default="cpu", choices=list(KINDS), help="instance kind (KIND_CPU/KIND_GPU)"
    )
    sp.add_argument("--instances", type=int, default=1, help="instances per model (1)")
    add_model_arguments(sp)
    sp.set_defaults(func=run)


def run(args) -> int:
    from ..cli import EXIT_CHECK_FAILED, EXIT_OK

    if args.check:
        if args.model or args.repository:
            raise InputError("--check REPO takes no MODEL and no -o: it checks REPO only.")
        check = check_repository(args.check)
        for problem in check.problems:
            print(f"FAILED {problem}")
        verdict = "ok" if check.ok else f"{len(check.problems)} problem(s)"
        print(
            f"Checked {len(check.models)} model(s) in {check.path} ({check.runs} ONNX Runtime "
            f"run(s)): {verdict}."
        )
        return EXIT_OK if check.ok else EXIT_CHECK_FAILED
    if not args.model or not args.repository:
        raise InputError("triton needs MODEL(s) and -o REPO (or --check REPO to check one).")
    _pb()
    if args.instances < 1:
        raise InputError(f"--instances must be 1 or more, not {args.instances}.")
    from ..rewrite.readings import parse_readings
    from .models import load_all, model_name

    sources = {model_name(m): m for m in args.model}
    guarded = [("input model", m) for m in args.model]
    REPOSITORY.check(args.repository, sources=guarded)  # before the work, not only after
    models = load_all(
        args.model,
        input_shapes=dict(args.input_shape),
        readings=parse_readings(args.readings),
        output=args.output_name,
        wrt=args.wrt,
        logits=args.logits,
        mode=args.mode,
        providers="cpu",
    )
    out = write_repository(
        models, args.repository, device=args.device, instances=args.instances, sources=sources
    )
    print(f"Wrote the Triton model repository {out}: {', '.join(m.name for m in models)}.")
    print(
        f"Check it with `onnxscope triton --check {out}`; serve it with tritonserver "
        "(docs/triton.md)."
    )
    return EXIT_OK
