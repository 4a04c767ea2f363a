"""The Open Inference Protocol's tensors on the wire: requests decoded into numpy arrays and
answers encoded, for REST (JSON, and the binary tensor extension: a JSON header of
`Inference-Header-Content-Length` bytes, then the tensors' raw bytes in order) and for gRPC's
typed `contents` and raw bytes (grpc_service.py). Every malformed request is a RequestError
naming the tensor and what was wrong, raised before anything runs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .models import DATATYPES, DTYPES, RequestError

HEADER = "Inference-Header-Content-Length"
UNSUPPORTED = {"BYTES", "BF16"}  # protocol datatypes no served graph takes


@dataclass
class InferRequest:
    """A decoded inference request: its inputs as arrays, the outputs asked for (None: all), and
    for REST which of them come back as binary data."""

    inputs: dict[str, np.ndarray]
    outputs: list[str] | None = None
    id: str = ""
    binary: dict[str, bool] = field(default_factory=dict)  # requested output -> binary_data
    binary_default: bool = False  # parameters.binary_data_output


def dtype_of(name: str, datatype) -> np.dtype:
    """The numpy dtype of input `name`'s datatype string."""
    if isinstance(datatype, str) and datatype in DTYPES:
        return DTYPES[datatype]
    if datatype in UNSUPPORTED:
        raise RequestError(f"Input {name!r}: datatype {datatype} is not supported by this server.")
    raise RequestError(
        f"Input {name!r}: {datatype!r} is not an Open Inference Protocol datatype; use one of "
        f"{sorted(DTYPES)}."
    )


def shape_of(name: str, shape) -> tuple[int, ...]:
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise RequestError(f"Input {name!r}: 'shape' must be a list of sizes, not {shape!r}.")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(f"Input {name!r}: shape {list(shape)} must hold sizes of 0 or more.")
    return tuple(shape)


def from_bytes(name: str, datatype, shape, raw: bytes | memoryview) -> np.ndarray:
    """Input `name` from its raw little-endian bytes (row-major)."""
    dtype, shape = dtype_of(name, datatype), shape_of(name, shape)
    count = int(np.prod(shape, dtype=object))
    if count * dtype.itemsize != len(raw):
        raise RequestError(
            f"Input {name!r}: shape {list(shape)} of {datatype} is {count * dtype.itemsize} "
            f"bytes, but {len(raw)} bytes came."
        )
    return np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)


# the value kinds numpy finds in a list that each datatype kind accepts (never a silent cast)
ACCEPTS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
KIND_NAMES = {"b": "true/false values", "i": "integers", "u": "integers", "f": "numbers"}


def from_values(name: str, datatype, shape, values) -> np.ndarray:
    """Input `name` from a list of values (flat or nested, row-major), as JSON or gRPC's typed
    contents give them: booleans for BOOL, integers in range for integer types, numbers for
    floats."""
    dtype, shape = dtype_of(name, datatype), shape_of(name, shape)
    try:
        found = np.array(values)
    except (ValueError, TypeError, OverflowError) as exc:
        message = f"Input {name!r}: its data is not a regular list of numbers ({exc})."
        raise RequestError(message) from None
    if found.size and found.dtype.kind not in ACCEPTS[dtype.kind]:
        raise RequestError(
            f"Input {name!r}: {datatype} data must be {KIND_NAMES[dtype.kind]}, not "
            f"{KIND_NAMES.get(found.dtype.kind, 'values of type ' + found.dtype.name)}."
        )
    count = int(np.prod(shape, dtype=object))
    if found.size != count:
        raise RequestError(
            f"Input {name!r}: shape {list(shape)} has {count} elements, but {found.size} values "
            "came."
        )
    if dtype.kind in "iu" and found.size:
        info = np.iinfo(dtype)
        if int(found.min()) < info.min or int(found.max()) > info.max:
            raise RequestError(f"Input {name!r}: a value is out of the range of {datatype}.")
    return found.astype(dtype).reshape(shape)


def _field(entry: Mapping, key: str, kinds, what: str, default=None):
    value = entry.get(key, default)
    if value is not None and not isinstance(value, kinds):
        raise RequestError(f"{what}: '{key}' must be {kinds_name(kinds)}, not {value!r}.")
    return value


def kinds_name(kinds) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", dict: "an object"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _parameters(entry: Mapping, what: str) -> Mapping:
    return _field(entry, "parameters", dict, what, {})


def decode_http(body: bytes, header_length: str | None) -> InferRequest:
    """A REST inference request: the whole body as JSON, or with `header_length` (the
    Inference-Header-Content-Length header) a JSON header followed by the binary inputs."""
    if header_length is None:
        header, rest = body, memoryview(b"")
    else:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise RequestError(
                f"{HEADER} is {header_length!r}, but the body has {len(body)} bytes."
            )
        header, rest = body[:length], memoryview(body)[length:]
    try:
        request = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"The request is not valid JSON: {exc}.") from None
    if not isinstance(request, dict):
        raise RequestError("The request must be a JSON object with 'inputs'.")
    entries = request.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise RequestError("The request must have 'inputs': a non-empty list of tensors.")
    inputs, offset = {}, 0
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise RequestError("Every input must be an object with a 'name' (a string).")
        name = entry["name"]
        if name in inputs:
            raise RequestError(f"Input {name!r} is given twice.")
        what = f"Input {name!r}"
        size = _field(_parameters(entry, what), "binary_data_size", int, what)
        if size is None:
            if "data" not in entry:
                raise RequestError(f"{what} has neither 'data' nor a binary_data_size.")
            data = entry["data"]
            inputs[name] = from_values(name, entry.get("datatype"), entry.get("shape"), data)
            continue
        if "data" in entry:
            raise RequestError(f"{what} has both 'data' and a binary_data_size.")
        if header_length is None:
            raise RequestError(f"{what} has a binary_data_size, but the request has no {HEADER}.")
        if size < 0 or offset + size > len(rest):
            raise RequestError(
                f"{what}: binary_data_size {size} runs past the end of the body ({len(rest)} "
                f"bytes of binary data, {offset} used by the inputs before it)."
            )
        raw = rest[offset : offset + size]
        inputs[name] = from_bytes(name, entry.get("datatype"), entry.get("shape"), raw)
        offset += size
    if offset != len(rest):
        raise RequestError(
            f"The inputs' binary_data_size add up to {offset} bytes, but {len(rest)} bytes follow "
            "the JSON header."
        )
    decoded = InferRequest(inputs, id=str(_field(request, "id", str, "The request", "")))
    parameters = _parameters(request, "The request")
    decoded.binary_default = bool(
        _field(parameters, "binary_data_output", bool, "The request", False)
    )
    outputs = _field(request, "outputs", list, "The request")
    if outputs:
        decoded.outputs = []
        for entry in outputs:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise RequestError("Every requested output must be an object with a 'name'.")
            what = f"Output {entry['name']!r}"
            binary = _field(_parameters(entry, what), "binary_data", bool, what)
            if _parameters(entry, what).get("classification"):
                raise RequestError(f"{what}: the classification extension is not supported.")
            decoded.outputs.append(entry["name"])
            decoded.binary[entry["name"]] = decoded.binary_default if binary is None else binary
    return decoded


def encode_http(
    model: str, request: InferRequest, results: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The REST answer: (body, header length), the header length None for an all-JSON body."""
    outputs, blobs = [], []
    for name, value in results.items():
        entry = {"name": name, "datatype": DATATYPES[value.dtype], "shape": list(value.shape)}
        if request.binary.get(name, request.binary_default):
            blob = np.ascontiguousarray(value, value.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = value.ravel().tolist()
        outputs.append(entry)
    answer = {"model_name": model, "model_version": "1", "outputs": outputs}
    if request.id:
        answer["id"] = request.id
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
