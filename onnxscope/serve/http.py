"""The Open Inference Protocol over REST: a Starlette app of one Service (server.py).

    GET  /v2                                            server metadata
    GET  /v2/health/live, /v2/health/ready              health (open without the API key)
    GET  /v2/models/NAME[/versions/1]                   model metadata
    GET  /v2/models/NAME[/versions/1]/ready             model readiness
    POST /v2/models/NAME[/versions/1]/infer             inference (JSON or binary tensors)
    GET  /metrics                                       Prometheus text
    GET  /explore/NAME (and its JSON questions)         the explorer, with `explorers` (explore/)

Every error is `{"error": "..."}` with its status: 400 a bad request, 401 no key, 404 unknown,
413 a body over --max-request-bytes, 500 a server fault (logged; the next request is served)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .models import RequestError
from .oip import HEADER, decode_http, encode_http
from .server import OPEN_PATHS, Service, fault_message


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 as soon as it is known to exceed `limit` bytes."""
    too_big = RequestError(f"The request body is over the limit of {limit} bytes.", 413)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def make_app(service: Service, explorers: dict | None = None) -> Starlette:
    def model_of(request: Request):
        params = request.path_params
        return service.model(params["name"], params.get("version", ""))

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(service.metadata())

    async def healthy(request: Request) -> Response:
        return Response(status_code=200)

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(model_of(request).metadata())

    async def model_ready(request: Request) -> Response:
        model_of(request)
        return Response(status_code=200)

    def answer(model, body: bytes, header_length: str | None) -> Response:
        request = decode_http(body, header_length)
        results = service.infer(model, request)
        content, length = encode_http(model.name, request, results)
        if length is None:
            return Response(content, media_type="application/json")
        return Response(
            content, media_type="application/octet-stream", headers={HEADER: str(length)}
        )

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            with service.measure("http", name):
                model = model_of(request)
                body = await read_body(request, service.max_request_bytes)
                return await run_in_threadpool(
                    answer, model, body, request.headers.get(HEADER.lower())
                )
        except RequestError as exc:
            return error(str(exc), exc.status)
        except Exception:  # logged by measure
            return error(fault_message(name), 500)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.text(), media_type=service.metrics.content_type)

    async def refused(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RequestError):
            return error(str(exc), exc.status)
        if isinstance(exc, HTTPException):
            return error(f"{request.method} {request.url.path}: {exc.detail}.", exc.status_code)
        return error("Internal server error (see the server's log).", 500)

    def routes(path: str, endpoint, methods=("GET",)) -> list[Route]:
        model = "/v2/models/{name}"
        return [
            Route(f"{model}{path}", endpoint, methods=list(methods)),
            Route(f"{model}/versions/{{version}}{path}", endpoint, methods=list(methods)),
        ]

    app = Starlette(
        routes=[
            Route("/v2", server_metadata),
            Route("/v2/health/live", healthy),
            Route("/v2/health/ready", healthy),
            *routes("", model_metadata),
            *routes("/ready", model_ready),
            *routes("/infer", infer, ("POST",)),
            Route("/metrics", metrics),
            *explore_routes(explorers),
        ],
        exception_handlers={RequestError: refused, HTTPException: refused, Exception: refused},
    )
    app.add_middleware(KeyCheck, service=service)
    return app


def explore_routes(explorers: dict | None) -> list[Route]:
    """The explorer's routes (onnxscope/serve/explore/routes.py), when there are explorers."""
    if not explorers:
        return []
    from .explore.routes import explorer_routes

    return explorer_routes(explorers, read_body)


class KeyCheck:
    """ASGI middleware: with an API key, every path but the health checks needs
    `Authorization: Bearer KEY` (else 401)."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.service.api_key is None:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if self.service.authorized(authorization):
            return await self.app(scope, receive, send)
        self.service.metrics.unauthorized.labels("http").inc()
        response = error("This server needs an API key: send 'Authorization: Bearer KEY'.", 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)
