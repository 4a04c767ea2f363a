"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` from the protocol's own
generated protobufs (tritonclient's service_pb2), on grpcio's thread pool. ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer (typed contents or
raw_input_contents in; raw_output_contents out); the other methods answer UNIMPLEMENTED (the
generated base class). A request's error has the REST message, with INVALID_ARGUMENT,
UNAUTHENTICATED, NOT_FOUND or RESOURCE_EXHAUSTED for 400, 401, 404, 413; a message over
--max-request-bytes is refused by grpcio itself (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

from concurrent import futures

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .models import DATATYPES, RequestError
from .oip import InferRequest, from_bytes, from_values
from .server import OPEN, Service, fault_message

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
CONTENTS = {  # datatype -> the InferTensorContents field its typed values go in
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}  # FP16 has no typed field: raw_input_contents only


def decode(request) -> InferRequest:
    """A ModelInferRequest's tensors: all from raw_input_contents (one per input, in order) or
    all from their typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            f"The request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents."
        )
    inputs = {}
    for i, tensor in enumerate(request.inputs):
        name, shape = tensor.name, list(tensor.shape)
        if name in inputs:
            raise RequestError(f"Input {name!r} is given twice.")
        given = [f.name for f, _ in tensor.contents.ListFields()]
        if raw:
            if given:
                raise RequestError(f"Input {name!r} has both raw_input_contents and {given[0]}.")
            inputs[name] = from_bytes(name, tensor.datatype, shape, raw[i])
            continue
        wanted = CONTENTS.get(tensor.datatype)
        if given and given != [wanted]:
            where = f"goes in {wanted}" if wanted else "goes in raw_input_contents"
            raise RequestError(
                f"Input {name!r}: {tensor.datatype} {where}, but the request gives {given[0]}."
            )
        values = getattr(tensor.contents, wanted) if wanted else []
        inputs[name] = from_values(name, tensor.datatype, shape, list(values))
    outputs = [o.name for o in request.outputs] or None
    return InferRequest(inputs, outputs, id=request.id)


def encode(model: str, request: InferRequest, results) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name=model, model_version="1", id=request.id)
    for name, value in results.items():
        response.outputs.add(name=name, datatype=DATATYPES[value.dtype], shape=value.shape)
        little = np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
        response.raw_output_contents.append(little.tobytes())
    return response


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: Service):
        self.service = service

    def _model(self, request, context):
        try:
            return self.service.model(request.name, request.version)
        except RequestError as exc:
            context.abort(CODES[exc.status], str(exc))

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        self._model(request, context)
        return service_pb2.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(**self.service.metadata())

    def ModelMetadata(self, request, context):
        meta = self._model(request, context).metadata()
        tensors = {k: [dict(t) for t in meta[k]] for k in ("inputs", "outputs")}
        return service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"], **tensors
        )

    def ModelInfer(self, request, context):
        name = request.model_name
        try:
            with self.service.measure("grpc", name):
                model = self.service.model(name, request.model_version)
                decoded = decode(request)
                return encode(model.name, decoded, self.service.infer(model, decoded))
        except RequestError as exc:
            context.abort(CODES[exc.status], str(exc))
        except Exception:  # logged by measure
            context.abort(grpc.StatusCode.INTERNAL, fault_message(name))


class KeyCheck(grpc.ServerInterceptor):
    """With an API key, every method but ServerLive and ServerReady needs the metadata
    `authorization: Bearer KEY` (else UNAUTHENTICATED)."""

    def __init__(self, service: Service):
        self.service = service

        def refuse(request, context):
            service.metrics.unauthorized.labels("grpc").inc()
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "This server needs an API key: send the metadata 'authorization: Bearer KEY'.",
            )

        self._refuse = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation, details):
        if details.method.rsplit("/", 1)[-1] in OPEN:
            return continuation(details)
        metadata = dict(details.invocation_metadata or ())
        if self.service.authorized(metadata.get("authorization")):
            return continuation(details)
        return self._refuse


def make_server(service: Service, address: str, *, threads: int):
    """A grpc.Server bound to `address` (port 0: a free one), not started, and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        interceptors=[KeyCheck(service)] if service.api_key is not None else [],
        options=[
            ("grpc.max_receive_message_length", service.max_request_bytes),
            ("grpc.max_send_message_length", -1),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(service), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"gRPC could not listen on {address}.")
    return server, port
