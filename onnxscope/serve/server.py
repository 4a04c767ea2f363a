"""`onnxscope serve`'s server: one `Service` (the served models, the API key, the limits, the
metrics) behind two front ends in one process, the REST app (http.py) on uvicorn and the gRPC
servicer (grpc_service.py) on grpcio's thread pool. Both run each request's ONNX Runtime session
off their event loop, in threads: a session is shared, and ORT's run is thread-safe."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from .. import __version__
from .metrics import Metrics
from .models import RequestError, ServedModel
from .oip import InferRequest

LOG = logging.getLogger("onnxscope.serve")
MAX_REQUEST_BYTES = 64 << 20  # --max-request-bytes default
OPEN = ("ServerLive", "ServerReady")  # health checks that need no API key (gRPC; REST: OPEN_PATHS)
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
GRPC_THREADS = 16
STARTUP_TIMEOUT = 60.0  # seconds


class Service:
    """What both front ends serve: models by name, the key check, the limits and the metrics."""

    def __init__(
        self,
        models: Sequence[ServedModel],
        *,
        api_key: bytes | None = None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ):
        self.models = {m.name: m for m in models}
        if len(self.models) < len(models):
            raise ValueError("Two served models have the same name.")
        self.api_key = api_key
        self.max_request_bytes = max_request_bytes
        self.metrics = Metrics(self.models)

    def model(self, name: str, version: str = "") -> ServedModel:
        """The model `name` (version "" or "1": each model has one), else a 404."""
        model = self.models.get(name)
        if model is None:
            raise RequestError(
                f"No model {name!r} is served here; the models are {sorted(self.models)}.", 404
            )
        if version not in ("", "1"):
            raise RequestError(f"Model {name!r} has version 1 only, not {version!r}.", 404)
        return model

    def authorized(self, authorization: str | None) -> bool:
        """Whether an Authorization header value carries the key (constant-time compare)."""
        if self.api_key is None:
            return True
        given = (authorization or "").encode("utf-8", "replace")
        return hmac.compare_digest(given, b"Bearer " + self.api_key)

    def metadata(self) -> dict:
        return {"name": "onnxscope", "version": __version__, "extensions": ["binary_tensor_data"]}

    def infer(self, model: ServedModel, request: InferRequest) -> dict[str, np.ndarray]:
        return model.infer(request.inputs, request.outputs)

    @contextmanager
    def measure(self, protocol: str, model: str) -> Iterator[None]:
        """Count and time one inference request; its status from the exception, if one ends it
        (a RequestError's, else 500, logged with its traceback)."""
        start, status = time.perf_counter(), 200
        try:
            yield
        except RequestError as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            LOG.exception("Server fault while answering a request for model %r", model)
            raise
        finally:
            self.metrics.observe(model, protocol, status, time.perf_counter() - start)


def fault_message(model: str) -> str:
    return f"Internal server error while answering for model {model!r} (see the server's log)."


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    """The REST and gRPC front ends of one Service. `start()` runs them in the background (the
    tests), `run()` in the foreground until SIGINT/SIGTERM (the command). Port 0: a free one;
    `grpc_port=None`: no gRPC. `explorers`: {model name: explore.Explorer}, the explorer pages."""

    def __init__(
        self,
        service: Service,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        grpc_port: int | None = 8001,
        explorers: dict | None = None,
    ):
        import uvicorn

        from .http import make_app

        self.service, self.host = service, host
        self.grpc_port = grpc_port
        config = uvicorn.Config(
            make_app(service, explorers),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._uvicorn = uvicorn.Server(config)
        self._grpc = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._uvicorn.servers[0].sockets[0].getsockname()[1]

    @property
    def http_url(self) -> str:
        return f"http://{host_port(self.host, self.port)}"

    @property
    def grpc_address(self) -> str | None:
        return None if self.grpc_port is None else host_port(self.host, self.grpc_port)

    def _start_grpc(self) -> None:
        if self.grpc_port is None:
            return
        from .grpc_service import make_server

        self._grpc, self.grpc_port = make_server(
            self.service, host_port(self.host, self.grpc_port), threads=GRPC_THREADS
        )
        self._grpc.start()

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Server:
        self._start_grpc()
        self._thread = threading.Thread(target=self._uvicorn.run, name="uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"The REST server did not start on {self.host}.")
            time.sleep(0.01)
        return self

    def run(self, on_ready=None) -> None:
        """Serve until SIGINT or SIGTERM (uvicorn's handlers); `on_ready(self)` once listening."""
        self._start_grpc()
        watcher = threading.Thread(target=self._when_started, args=(on_ready,), daemon=True)
        watcher.start()
        try:
            self._uvicorn.run()
        finally:
            self._stop_grpc()

    def _when_started(self, on_ready) -> None:
        while not self._uvicorn.started and not self._uvicorn.should_exit:
            time.sleep(0.01)
        if self._uvicorn.started and on_ready is not None:
            on_ready(self)

    def _stop_grpc(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(5.0)
            self._grpc = None

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(10.0)
        self._stop_grpc()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
