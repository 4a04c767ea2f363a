"""The ONNX conformance data for `test_conformance.py`: node tests and `light/` model-zoo models.

The onnx wheel ships `onnx/backend/test/data/light/` (model-zoo topologies whose weights are
`ConstantOfShape` dummies, plus `light_*_output_0.pb` for the backend runner's input
`arange(n) / n`). Wheels of onnx 1.23 no longer ship `data/node/`: they ship the Python
generators it is made from (`onnx.backend.test.case.node`), which `python -m
onnx.backend.test.cmd_tools generate-data` used to write out. `node_data_dir()` uses the shipped
folder when there is one and otherwise writes the same layout (one folder per node test:
`model.onnx`, `test_data_set_*/input_*.pb`, `output_*.pb`) once per process into a temporary
folder, with NumPy's global generator seeded so the random test data is the same every run.

A node test is *applicable* when
- its default opset is in `onnxscope.graph.model.SUPPORTED_OPSETS`,
- every node that depends on a graph input has a rule (`rule_for(node)`); nodes computed from
  constants alone (the `Constant` nodes of the `_expanded` tests) are folded by onnxscope's static
  analysis and need none,
- its graph inputs and outputs are tensors, and a float32/float64 input reaches an output (the
  first such input is `wrt`).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import onnxscope.rewrite.rules  # noqa: F401  (fills the registry)
from onnxscope.graph.model import SUPPORTED_OPSETS, default_opset, graph_inputs
from onnxscope.graph.ops import CONTROL_FLOW_OPS
from onnxscope.graph.recurrent import RECURRENT_OPS
from onnxscope.rewrite.registry import rule_for

# expanded before analysis (graph/controlflow.py, graph/recurrent.py): no rule needed
EXPANDED_BEFORE_ANALYSIS = CONTROL_FLOW_OPS | RECURRENT_OPS

ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
SHIPPED_NODE_DIR = ONNX_DATA / "node"
LIGHT_DIR = ONNX_DATA / "light"
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)

# what the onnx backend runner compares node outputs with (onnx/backend/test/runner)
PB_RTOL, PB_ATOL = 1e-3, 1e-7


# -- the node test folders -----------------------------------------------------------------------


@cache
def node_data_dir() -> tuple[Path, str]:
    """(folder holding one sub-folder per node test, where it came from)."""
    if SHIPPED_NODE_DIR.is_dir() and any(SHIPPED_NODE_DIR.glob("*/model.onnx")):
        return SHIPPED_NODE_DIR, f"shipped in the onnx {onnx.__version__} wheel"
    out = Path(tempfile.mkdtemp(prefix="onnx-node-tests-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    count = write_node_data(out)
    return out, f"generated from onnx {onnx.__version__}'s node test cases ({count} folders)"


def write_node_data(out: Path) -> int:
    """Write every node test of `onnx.backend.test.case.node` in the shipped folder layout (what
    onnx's `cmd_tools generate-data` wrote), the data sets of applicable tests only; returns the
    number of folders."""
    state = np.random.get_state()
    np.random.seed(0)  # the generators draw from NumPy's global generator at import
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            import onnx.backend.test.case.node as node_cases

            cases = node_cases.collect_testcases(None)
    finally:
        np.random.set_state(state)
    for case in cases:
        folder = out / case.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_bytes(case.model.SerializeToString())
        if not classify(case.model).applicable:
            continue  # its data is never read: spare writing it (~50 MB in all)
        for i, (inputs, outputs) in enumerate(case.data_sets):
            data = folder / f"test_data_set_{i}"
            data.mkdir(exist_ok=True)
            for kind, values, infos in (
                ("input", inputs, case.model.graph.input),
                ("output", outputs, case.model.graph.output),
            ):
                for j, value in enumerate(values):
                    proto = _to_proto(value, infos[j])
                    (data / f"{kind}_{j}.pb").write_bytes(proto.SerializeToString())
    return len(cases)


def _to_proto(value, info: onnx.ValueInfoProto):
    if isinstance(value, onnx.TensorProto):
        return value
    if info.type.HasField("sequence_type"):
        return numpy_helper.from_list(value, info.name)
    if info.type.HasField("optional_type"):
        return numpy_helper.from_optional(value, info.name)
    if info.type.HasField("map_type"):
        return numpy_helper.from_dict(value, info.name)
    return numpy_helper.from_array(np.asarray(value), info.name)


# -- classification ------------------------------------------------------------------------------


@dataclass
class Applicability:
    """Why a model is or is not a conformance subject for onnxscope."""

    category: str  # applicable | missing-ops | opset | non-tensor-io | no-float-input
    missing_ops: list[str] = field(default_factory=list)
    opset: int | None = None
    wrt: str | None = None
    inputs: list[str] = field(default_factory=list)  # the real graph inputs, in order

    @property
    def applicable(self) -> bool:
        return self.category == "applicable"


def missing_ops(model: onnx.ModelProto) -> list[str]:
    """Op types (sorted) of nodes that depend on a graph input and have no rule (control flow is
    expanded before analysis where the shapes decide it: not missing)."""
    live = {vi.name for vi in graph_inputs(model)}
    missing = set()
    for node in model.graph.node:
        if any(i in live for i in node.input) or _subgraph_reads(node, live):
            live.update(o for o in node.output if o)
            if rule_for(node) is None and node.op_type not in EXPANDED_BEFORE_ANALYSIS:
                missing.add(
                    node.op_type
                    if node.domain in ("", "ai.onnx")
                    else f"{node.domain}.{node.op_type}"
                )
    return sorted(missing)


def _subgraph_reads(node: onnx.NodeProto, names: set[str]) -> bool:
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for n in g.node:
                if any(i in names for i in n.input) or _subgraph_reads(n, names):
                    return True
    return False


def reaching_float_input(model: onnx.ModelProto) -> str | None:
    """The first float32/float64 graph input from which some graph output can be reached."""
    outputs = {o.name for o in model.graph.output}
    for vi in graph_inputs(model):
        if vi.type.tensor_type.elem_type not in FLOAT_TYPES:
            continue
        live = {vi.name}
        for node in model.graph.node:
            if any(i in live for i in node.input) or _subgraph_reads(node, live):
                live.update(node.output)
        if live & outputs:
            return vi.name
    return None


def classify(model: onnx.ModelProto) -> Applicability:
    inputs = [vi.name for vi in graph_inputs(model)]
    missing = missing_ops(model)
    try:
        opset = default_opset(model)
    except Exception:
        opset = None
    io = [*graph_inputs(model), *model.graph.output]
    tensors = all(vi.type.HasField("tensor_type") for vi in io)
    wrt = reaching_float_input(model) if tensors else None
    if missing:
        category = "missing-ops"
    elif opset not in SUPPORTED_OPSETS:
        category = "opset"
    elif not tensors:
        category = "non-tensor-io"
    elif wrt is None:
        category = "no-float-input"
    else:
        category = "applicable"
    return Applicability(category, missing, opset, wrt, inputs)


@dataclass
class NodeTest:
    name: str
    folder: Path
    app: Applicability

    @property
    def model_path(self) -> Path:
        return self.folder / "model.onnx"

    def data_sets(self) -> list[tuple[dict[str, np.ndarray], list[np.ndarray]]]:
        """[(inputs by graph input name, expected outputs in graph output order)]."""
        model = onnx.load(str(self.model_path))
        names = [vi.name for vi in model.graph.input]  # input_j.pb is graph.input[j]
        sets = []
        for data in sorted(self.folder.glob("test_data_set_*")):
            ins = sorted(data.glob("input_*.pb"), key=_index)
            outs = sorted(data.glob("output_*.pb"), key=_index)
            inputs = {names[_index(p)]: read_tensor(p) for p in ins}
            sets.append((inputs, [read_tensor(p) for p in outs]))
        return sets


def _index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def read_tensor(path: Path) -> np.ndarray:
    proto = onnx.TensorProto()
    proto.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(proto)


@cache
def node_tests() -> list[NodeTest]:
    root, _ = node_data_dir()
    tests = []
    for folder in sorted(p for p in root.iterdir() if (p / "model.onnx").is_file()):
        model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        tests.append(NodeTest(folder.name, folder, classify(model)))
    return tests


def node_counts() -> tuple[Counter, Counter]:
    """(tests per category, not-applicable tests per missing op)."""
    categories, ops = Counter(), Counter()
    for t in node_tests():
        categories[t.app.category] += 1
        ops.update(t.app.missing_ops)
    return categories, ops


# -- light models --------------------------------------------------------------------------------


@dataclass
class LightModel:
    name: str  # light_resnet50
    path: Path
    app: Applicability

    @property
    def expected_path(self) -> Path:
        return self.path.with_name(f"{self.name}_output_0.pb")

    def input_shape(self) -> tuple[int, ...]:
        model = onnx.load(str(self.path))
        vi = next(v for v in graph_inputs(model) if v.name == self.app.wrt)
        return tuple(
            d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim
        )


@cache
def light_models() -> list[LightModel]:
    models = []
    for path in sorted(LIGHT_DIR.glob("light_*.onnx")):
        models.append(LightModel(path.stem, path, classify(onnx.load(str(path)))))
    return models


def runner_dummy_input(shape: tuple[int, ...]) -> np.ndarray:
    """The input the onnx backend runner made `light_*_output_0.pb` with (arange(n) / n)."""
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def has_nonfinite(arrays) -> bool:
    return any(np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)) for a in arrays)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
