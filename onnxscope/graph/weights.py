"""Large initializers held once and shared by every graph onnxscope builds.

Without this, every artifact embedded its own copy of the weights (scope.onnx four), each
session serialized its graph with them, and protobuf refuses any graph past 2 GB. Instead every
initializer of at least THRESHOLD bytes lives once, as a numpy array in a `Weights` store, and
the graphs hold ONNX external-data stubs for it (data_location=EXTERNAL, location "weights.bin",
offset, length): the graphs stay small, and `rewrite -o DIR` writes weights.bin once beside them.
Small tensors stay inline (shape inference and constant folding read them).

In-process sessions get the arrays through SessionOptions, never by serializing them. Measured
with onnxruntime 1.32 (CPU, a 381 MB MatMul weight, three sessions):
- `add_initializer(name, OrtValue)` uses the array in place (no copy per session), but only with
  prepacking off (MLAS packs a MatMul/Gemm weight into a copy of its own, and packed MatMuls are
  about 2x faster at 16 probes), and it fails when a graph optimizer reads the weight (Conv's
  NCHWc layout): ORT reads such a stub's file, here an empty placeholder (so a read can only fail,
  never give wrong numbers).
- `add_external_initializers` works with every optimizer and keeps prepacking, but copies the
  data into each session.
So a session shares the store's arrays where ORT takes them that way, and falls back to the
copying form when ORT refuses.

All this is for models whose large initializers add up to LARGE_BYTES: below, the graphs keep
their weights inline (self-contained ModelProtos that any tool runs, and the files as before).
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

THRESHOLD = 1024  # bytes: initializers at least this large are external
LOCATION = "weights.bin"
ALIGN = 64  # offsets in weights.bin (ORT mmaps the file; aligned rows suit its kernels)
# Models with this much in large initializers get the store: one copy per graph and per session
# of a model this big is what runs a machine out of memory (the cost: sessions share weights with
# prepacking off, and in-memory graphs need the store to run)
LARGE_BYTES = 256 << 20
# A session that ORT cannot make with shared weights because an optimizer reads one (constant
# folding: the Transposes of an adjoint's MatMul weights, a MatMul by the bias graph's zero probe)
# gets copies of the weights, with folding and prepacking: its numbers as always (True). False:
# retry with folding off, sharing the weights with prepacking off, as the mask and linear graphs
# do: no copy (interpret + verify of a 604 MB MLP at 2.1x its weights instead of 3.2x, 2x faster),
# but the bias and adjoint round otherwise than before (1e-7 relative: prepacked MatMuls sum in
# another order) and a Conv's result may change (no NCHWc layout for a weight computed in a run).
KEEP_FOLDING = False
FOLDING = ["ConstantFolding"]  # ONNX Runtime's optimizer that reads initializers' data

# Every store's offsets lie in a range of their own, [k BLOCK, (k + 1) BLOCK) for the k-th store
# made in this process: a stub names its data uniquely, so a copy of a light model (LinearScope's
# model, say) finds the store that holds its weights while that store lives. (In-process offsets
# only: ONNX Runtime is given the arrays, and `pack` renumbers the stubs of the files it writes.)
BLOCK = 1 << 44
_blocks = itertools.count(1)

_stores: weakref.WeakValueDictionary[int, Weights] = weakref.WeakValueDictionary()
_data: weakref.WeakValueDictionary[int, _Data] = weakref.WeakValueDictionary()  # block -> data


def weights_for(model: onnx.ModelProto) -> Weights:
    """The store of `model`'s large initializers, made once per model object (every input shape
    of a LinearScope shares it). The store keeps the model alive, so its id cannot be reused."""
    store = _stores.get(id(model))
    if store is None or store.source is not model:
        store = _stores[id(model)] = Weights(model)
    return store


class _Data:
    """The arrays of one virtual weights.bin, by offset (read-only), in this store's block."""

    def __init__(self):
        self.block = next(_blocks)
        self.size = self.block * BLOCK  # the next free offset
        self.arrays: dict[int, np.ndarray] = {}
        self.digests: dict[tuple, int] = {}  # content -> offset (constants made twice)
        self.ortvalues: dict[int, object] = {}
        _data[self.block] = self


def _data_of(model: onnx.ModelProto) -> _Data | None:
    """The live data whose stubs `model` holds (a copy of a light model), else None."""
    from ..errors import ModelError

    found = None
    for t in model.graph.initializer:
        ext = _external(t)
        if not ext or ext.get("location") != LOCATION or int(ext.get("offset", 0)) < BLOCK:
            continue
        data = _data.get(int(ext["offset"]) // BLOCK)
        if data is None or (found is not None and data is not found):
            raise ModelError(
                f"Initializer '{t.name}' refers to the weights of a LinearScope that no longer "
                "exists (keep the LinearScope alive while its model is used)."
            )
        found = data
    return found


def _external(t: onnx.TensorProto) -> dict[str, str] | None:
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in t.external_data}


def _nbytes(t: onnx.TensorProto) -> int:
    if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return 0
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def _copy_fields(src, dst, skip: str) -> None:
    """Every set field of message `src` into `dst`, except the one named `skip`."""
    for field, value in src.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


class Weights:
    """The large initializers of one model (and large constants the rules make), each stored once
    at an offset of a virtual weights.bin; `light` is the model with stubs in their place."""

    def __init__(self, model: onnx.ModelProto):
        from ..errors import ModelError

        self.source = model
        shared = _data_of(model)  # a copy of a light model: its stubs' data, shared
        self._d = shared or _Data()
        self._arrays = self._d.arrays  # offset -> the data, read-only
        big = [t for t in model.graph.initializer if _nbytes(t) >= THRESHOLD and not _external(t)]
        self.large = shared is not None or sum(_nbytes(t) for t in big) >= LARGE_BYTES
        if not self.large or not big:  # the model as it is (see LARGE_BYTES)
            self.light = model
            return
        self.light = onnx.ModelProto()
        _copy_fields(model, self.light, skip="graph")
        _copy_fields(model.graph, self.light.graph, skip="initializer")
        for t in model.graph.initializer:
            if _nbytes(t) >= THRESHOLD and _external(t) is None:
                try:
                    array = numpy_helper.to_array(t)
                except Exception as exc:  # data of the wrong size, an unreadable type
                    raise ModelError(
                        f"The model is not valid ONNX: initializer '{t.name}': {exc}"
                    ) from None
                self.light.graph.initializer.append(self.stub(t.name, array, dedup=False))
            else:
                self.light.graph.initializer.append(t)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def release(self) -> onnx.ModelProto:
        """The light model, which from now on is this store's model: the store no longer keeps
        the one it was made from (and its copy of the weights) alive. The caller keeps the store
        (the light model's stubs name data only a live store holds)."""
        if self.light is not self.source:
            self.source = self.light
            _stores[id(self.light)] = self
        return self.light

    def stub(self, name: str, array: np.ndarray, dedup: bool = True) -> onnx.TensorProto:
        """An external-data TensorProto for `array`, stored here (once, with `dedup`)."""
        array = np.ascontiguousarray(array)
        key = None
        if dedup:
            digest = hashlib.blake2b(memoryview(array).cast("B"), digest_size=16).digest()
            key = (array.dtype.str, array.shape, digest)
        d = self._d
        offset = d.digests.get(key) if key else None
        if offset is None:
            offset = d.size
            array.flags.writeable = False
            d.arrays[offset] = array
            d.size = -(-(offset + array.nbytes) // ALIGN) * ALIGN
            if key:
                d.digests[key] = offset
        dtype = helper.np_dtype_to_tensor_dtype(array.dtype)
        return _make_stub(name, dtype, array.shape, offset, array.nbytes)

    def _slot(self, t: onnx.TensorProto) -> int | None:
        """The offset of the array a stub of this store refers to, else None."""
        ext = _external(t)
        if not ext or ext.get("location") != LOCATION:
            return None
        offset = int(ext.get("offset", 0))
        array = self._arrays.get(offset)
        if array is None or array.nbytes != int(ext.get("length", -1)):
            return None
        return offset

    def value(self, t: onnx.TensorProto) -> np.ndarray:
        """The value of an initializer: from this store for its stubs, else from the tensor."""
        offset = self._slot(t)
        return numpy_helper.to_array(t) if offset is None else self._arrays[offset]

    def externalize(self, graph: onnx.GraphProto) -> None:
        """Replace the graph's large inline initializers by stubs (identical ones share data)."""
        if not self.large:
            return
        for i, t in enumerate(graph.initializer):
            if _nbytes(t) >= THRESHOLD and _external(t) is None:
                graph.initializer[i].CopyFrom(self.stub(t.name, numpy_helper.to_array(t)))

    def stubs(self, model: onnx.ModelProto) -> dict[str, int]:
        """Initializer name -> offset, for the stubs of this store in `model`."""
        found = ((t.name, self._slot(t)) for t in model.graph.initializer)
        return {name: offset for name, offset in found if offset is not None}

    # -- sessions ------------------------------------------------------------------------------
    def _ortvalue(self, offset: int):
        from ..runtime.sessions import ort

        values = self._d.ortvalues
        if offset not in values:  # kept as long as the store: sessions use the memory
            values[offset] = ort.OrtValue.ortvalue_from_numpy(self._arrays[offset])
        return values[offset]

    def session(self, model: onnx.ModelProto, options: Callable, providers, make=None):
        """An ONNX Runtime session of `model` whose stubs read this store's arrays. `options()`
        makes fresh SessionOptions (they are per session: initializers are added to them)."""
        from ..runtime.sessions import make_session

        make = make or make_session
        stubs = self.stubs(model)
        data = model.SerializeToString()  # small: the weights are stubs
        if not stubs:
            return make(data, options(), providers)

        def shared(**kwargs):  # the store's arrays in place: only with prepacking off
            opts = options()
            opts.add_session_config_entry("session.disable_prepacking", "1")
            opts.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", _placeholder_folder()
            )
            for name, offset in stubs.items():
                opts.add_initializer(name, self._ortvalue(offset))
            return make(data, opts, providers, **kwargs)

        try:
            return shared()
        except Exception:  # an optimizer read a weight: ORT copies it instead, below
            pass
        if not KEEP_FOLDING:
            try:  # the folded nodes run in each run instead, and the weights stay shared
                return shared(disabled_optimizers=FOLDING)
            except Exception:  # another optimizer read a weight (Conv's NCHWc layout)
                pass
        opts = options()
        names = list(stubs)
        opts.add_external_initializers(names, [self._ortvalue(stubs[n]) for n in names])
        return make(data, opts, providers)

    # -- files ---------------------------------------------------------------------------------
    def pack(self, graphs: dict[str, onnx.ModelProto]):
        """(graphs, writer, size) for writing: copies of `graphs` whose stubs point into a
        weights.bin holding only the arrays they use, and a function that streams that file."""
        used = sorted({o for g in graphs.values() for o in self.stubs(g).values()})
        where, size = {}, 0
        for offset in used:
            where[offset] = size
            size = -(-(size + self._arrays[offset].nbytes) // ALIGN) * ALIGN
        packed = {}
        for name, model in graphs.items():
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            for t in copy.graph.initializer:
                offset = self._slot(t)
                if offset is not None:
                    (entry,) = (e for e in t.external_data if e.key == "offset")
                    entry.value = str(where[offset])
            packed[name] = copy

        def write(path: str) -> None:
            with open(path, "xb") as f:
                for offset in used:
                    f.seek(where[offset])
                    array = self._arrays[offset]
                    view = memoryview(array.reshape(-1).view(np.uint8))
                    for start in range(0, len(view), 64 << 20):  # streamed, no giant bytes
                        f.write(view[start : start + (64 << 20)])
                f.truncate(size)

        return packed, (write if used else None), size


def _make_stub(name: str, dtype: int, shape, offset: int, length: int) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=dtype, dims=list(shape))
    t.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", LOCATION), ("offset", offset), ("length", length)):
        entry = t.external_data.add()
        entry.key, entry.value = key, str(value)
    return t


def checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` for onnx.checker, whose stubs (files it cannot see) are graph inputs of
    the same type and shape instead: every other part of the model is checked as it is."""
    out = onnx.ModelProto()
    _copy_fields(model, out, skip="graph")
    _copy_fields(model.graph, out.graph, skip="initializer")
    inputs = {vi.name for vi in out.graph.input}
    for t in model.graph.initializer:
        if _external(t) is None:
            out.graph.initializer.append(t)
        elif t.name not in inputs:
            out.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    return out


_placeholder: list[str] = []


def _placeholder_folder() -> str:
    """A private folder holding an empty weights.bin: ONNX Runtime checks that a stub's file
    exists before it takes the initializer given in its place, and any read of it fails."""
    if not _placeholder:
        folder = tempfile.mkdtemp(prefix="onnxscope-weights-")
        open(os.path.join(folder, LOCATION), "xb").close()
        atexit.register(shutil.rmtree, folder, True)
        _placeholder.append(folder)
    return _placeholder[0]


# -- reading a model file -----------------------------------------------------------------------
def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, start of the field, start and end of its value) of a protobuf message
    encoded in buf[start:end]; length-delimited values without their length prefix."""
    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos)
        kind = key & 7
        if kind == 0:
            _, after = _varint(buf, pos)
        elif kind == 1:
            after = pos + 8
        elif kind == 2:
            length, pos = _varint(buf, pos)
            after = pos + length
        elif kind == 5:
            after = pos + 4
        else:  # groups: not in ONNX
            raise ValueError("unsupported wire type")
        if after > end:
            raise ValueError("truncated message")
        yield key >> 3, first, pos, after
        pos = after


_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9  # ModelProto.graph, GraphProto.initializer, raw_data


def read_light(path: str) -> tuple[onnx.ModelProto, Weights] | None:
    """The light model and store of a model file whose large initializers are inline raw_data
    adding up to LARGE_BYTES, read without ever holding the file or a ModelProto with the
    weights (onnx.load holds both: three copies at its peak): each weight is read from the file
    into its array, the rest parsed as usual. None for any other file (small, external data,
    not in this form, corrupt: onnx.load reads it and says what is wrong)."""
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                return _read_light(f, view)
            finally:
                view.release()
    except Exception:  # noqa: BLE001 - not a model in this form: onnx.load's turn
        return None


def _read_light(f, buf) -> tuple[onnx.ModelProto, Weights] | None:
    rest, graph_rest, spans = [], [], []
    for number, first, start, end in _fields(buf, 0, len(buf)):
        if number != _GRAPH:
            rest.append(buf[first:end])
            continue
        for inner, gfirst, gstart, gend in _fields(buf, start, end):
            if inner == _INITIALIZER:
                spans.append((gfirst, gstart, gend))
            else:
                graph_rest.append(buf[gfirst:gend])
    tensors = []  # (TensorProto without its raw data, where the raw data is) or a whole tensor
    for _first, start, end in spans:
        raw = [(s, e) for n, _, s, e in _fields(buf, start, end) if n == _RAW_DATA]
        if len(raw) != 1:  # no raw data (float_data...), or split: parsed whole
            tensors.append((None, (start, end)))
            continue
        (s, e) = raw[0]
        head = onnx.TensorProto()
        for n, ffirst, _, fend in _fields(buf, start, end):
            if n != _RAW_DATA:
                head.MergeFromString(bytes(buf[ffirst:fend]))
        tensors.append((head, (s, e)))
    big = [
        (head, span)
        for head, span in tensors
        if head is not None and _nbytes(head) >= THRESHOLD and _external(head) is None
    ]
    if any(head is not None and _external(head) is not None for head, _ in tensors):
        return None  # external data: onnx.load reads it from the model's folder
    if any(_nbytes(head) != e - s for head, (s, e) in big):
        return None  # data of the wrong size: onnx.load's model gets the usual error
    if sum(_nbytes(head) for head, _ in big) < LARGE_BYTES:
        return None
    light = onnx.ModelProto()
    light.ParseFromString(b"".join(bytes(p) for p in rest))
    light.graph.ParseFromString(b"".join(bytes(p) for p in graph_rest))
    store = Weights.__new__(Weights)
    store._d = _Data()
    store._arrays, store.large = store._d.arrays, True
    store.source = store.light = light
    for head, (s, e) in tensors:
        if head is None:  # typed fields (small in practice): stored as the store does
            t = onnx.TensorProto.FromString(bytes(buf[s:e]))
            if _external(t) is not None:
                return None  # external data: onnx.load reads it from the model's folder
            if _nbytes(t) >= THRESHOLD:
                t = store.stub(t.name, numpy_helper.to_array(t), dedup=False)
            light.graph.initializer.append(t)
        elif _nbytes(head) < THRESHOLD or _external(head) is not None:
            t = light.graph.initializer.add()
            t.CopyFrom(head)
            t.raw_data = bytes(buf[s:e])
        else:  # raw data is little-endian: numpy_helper.to_array's values, read in place
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(head.data_type)).newbyteorder("<")
            array = np.empty(tuple(head.dims), dtype)
            f.seek(s)
            if f.readinto(memoryview(array.reshape(-1).view(np.uint8))) != e - s:
                return None
            array = array.astype(dtype.newbyteorder("="), copy=False)
            light.graph.initializer.append(store.stub(head.name, array, dedup=False))
    _stores[id(light)] = store
    return light, store
