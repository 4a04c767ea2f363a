"""The explorer's routes on the server's Starlette app (http.py):

    GET  /explore/NAME                    the page (page.html)
    GET  /explore-files/FILE              its script and style sheet (package files, by name)
    GET  /explore/NAME/state              model, conventions, input picture, outputs, layers
    POST /explore/NAME/input              image bytes (the body): the new current input
    GET  /explore/NAME/votes?class=K      votes of class K, Σ votes, bias, bias share
    GET  /explore/NAME/row?c=&y=&x=       the row of an output pixel
    GET  /explore/NAME/column?c=&y=&x=    the column of an input pixel
    GET  /explore/NAME/svd?y=&x=&h=&w=&k= top singular triplets of a crop
    GET  /explore/NAME/bias               the bias image c_x
    GET  /explore/NAME/verify             reconstruction, linearity and adjoint at the input
    GET  /explore/NAME/masks?layer=&channel=  the frozen decisions of a layer

A bad request is a 4xx `{"error": "..."}` (the page shows the message); no request names a file
on the server's disk (the page's files are looked up in a fixed table)."""

from __future__ import annotations

import html
import logging
import re
from importlib import resources
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..models import RequestError
from . import MAX_UPLOAD_BYTES, Explorer, decode_upload

LOG = logging.getLogger("onnxscope.serve.explore")
FILES = {"explore.js": "text/javascript", "explore.css": "text/css"}
INTEGER = re.compile(r"^-?[0-9]{1,9}$")
SECURITY = {  # the page loads nothing but its own files and talks to this server only
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _package_text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


def _integer(request: Request, key: str, default: int | None = None) -> int | None:
    text = request.query_params.get(key)
    if text is None or text == "":
        if default is None and key not in OPTIONAL:
            raise RequestError(f"Parameter '{key}' is missing: give an integer.")
        return default
    if not INTEGER.match(text):
        raise RequestError(f"Parameter '{key}' must be an integer, not {text[:40]!r}.")
    return int(text)


OPTIONAL = {"channel"}


def explorer_routes(explorers: dict[str, Explorer], read_body) -> list[Route]:
    """The routes of the explorers by model name; `read_body(request, limit)` reads a body up
    to a limit (a 413 past it)."""

    def explorer_of(request: Request) -> Explorer:
        name = request.path_params["name"]
        found = explorers.get(name)
        if found is None:
            raise RequestError(
                f"No explorer for model {name!r}; explored here: {sorted(explorers)}.", 404
            )
        return found

    def page(request: Request) -> Response:
        explorer = explorer_of(request)
        text = _package_text("page.html").replace("{{NAME}}", html.escape(explorer.name))
        return Response(text, media_type="text/html; charset=utf-8", headers=SECURITY)

    def package_file(request: Request) -> Response:
        name = request.path_params["file"]
        if name not in FILES:
            raise RequestError(f"No explorer file {name!r}.", 404)
        return Response(_package_text(name), media_type=FILES[name], headers=SECURITY)

    def answering(question):
        """An endpoint: the question's answer as JSON, computed off the event loop under the
        explorer's lock; a RequestError is its status, anything else a logged 500."""

        async def endpoint(request: Request) -> Response:
            try:
                explorer = explorer_of(request)
                body = await question.body(request) if hasattr(question, "body") else None

                def work():
                    with explorer.lock:
                        return question(explorer, request, body)

                return JSONResponse(await run_in_threadpool(work), headers=SECURITY)
            except RequestError as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            except Exception:
                LOG.exception("Explorer fault at %s", request.url.path)
                return JSONResponse(
                    {"error": "Internal server error (see the server's log)."}, status_code=500
                )

        return endpoint

    def state(explorer, request, body):
        return explorer.state()

    def new_input(explorer, request, body):
        picture = decode_upload(body)
        name = unquote(request.headers.get("x-filename", "upload"))[:80]  # (URI-encoded)
        explorer.set_input(picture, f"uploaded file {name!r}")
        return explorer.state()

    async def upload_body(request: Request) -> bytes:
        return await read_body(request, MAX_UPLOAD_BYTES)

    new_input.body = upload_body

    def votes(explorer, request, body):
        return explorer.class_votes(_integer(request, "class"))

    def position(request) -> tuple[int, int, int]:
        return tuple(_integer(request, key, 0 if key == "c" else None) for key in ("c", "y", "x"))

    def row(explorer, request, body):
        return explorer.row(*position(request))

    def column(explorer, request, body):
        return explorer.column(*position(request))

    def singular(explorer, request, body):
        crop = [_integer(request, key) for key in ("y", "x", "h", "w")]
        return explorer.singular(*crop, _integer(request, "k", 3))

    def bias(explorer, request, body):
        return explorer.bias()

    def verify(explorer, request, body):
        return explorer.verification()

    def masks(explorer, request, body):
        layer = request.query_params.get("layer") or ""
        return explorer.masks(layer, _integer(request, "channel"))

    base = "/explore/{name}"
    questions = {"state": state, "votes": votes, "row": row, "column": column,
                 "svd": singular, "bias": bias, "verify": verify, "masks": masks}  # fmt: skip
    return [
        Route(base, page),
        Route("/explore-files/{file}", package_file),
        Route(f"{base}/input", answering(new_input), methods=["POST"]),
        *[Route(f"{base}/{path}", answering(q)) for path, q in questions.items()],
    ]
