"""`onnxscope serve MODEL [MODEL ...]`: the models and their reading graphs over the Open
Inference Protocol, REST and gRPC, in one process (server.py). Everything is rewritten and its
sessions made before the server listens; the server writes no files."""

from __future__ import annotations

import sys


def _port(text: str) -> int:
    import argparse

    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 (any free one) to 65535: {text}")
    return port


def add_parser(sub) -> None:
    from ..cli import positive_int
    from .models import add_model_arguments

    sp = sub.add_parser(
        "serve",
        help="serve models and their readings over the Open Inference Protocol (REST, gRPC)",
        description="Serve each MODEL (as NAME, its file name) and its reading graphs (NAME.votes, "
        "NAME.rows, NAME.columns, NAME.scope) over the Open Inference Protocol: REST on --port "
        "and gRPC on --grpc-port, until Ctrl-C. Needs the serve extra.",
    )
    arg = sp.add_argument
    arg("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    arg("--port", type=_port, default=8000, help="REST port (8000; 0: any free one)")
    arg("--grpc-port", type=_port, default=8001, help="gRPC port (8001; 0: any free one)")
    arg("--no-grpc", action="store_true", help="serve REST only")
    arg("--device", default="cpu", choices=["cpu", "cuda"], help="where the sessions run")
    arg("--max-batch", type=positive_int, default=64, help="largest K (probes, classes) (64)")
    arg(
        "--max-request-bytes",
        type=positive_int,
        default=None,
        help="largest request body (64 MiB); larger: HTTP 413, gRPC RESOURCE_EXHAUSTED",
    )
    arg(
        "--api-key-file",
        help="file holding the API key: requests need 'Authorization: Bearer KEY' (health checks "
        "stay open)",
    )
    arg("--threads", type=positive_int, help="ONNX Runtime intra-op threads per session")
    arg(
        "--explore",
        action="store_true",
        help="also serve the explorer page of each model at /explore/NAME (needs every reading)",
    )
    arg("--image", help="--explore: the first input, a PNG/JPEG or .npy (default: bundled)")
    add_model_arguments(sp)
    from ..cli import add_image_options

    add_image_options(sp, logits=False)
    sp.set_defaults(func=run)


def _api_key(path: str | None) -> bytes | None:
    from ..errors import InputError

    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise InputError(f"Cannot read the API key file '{path}': {exc.strerror}.") from None
    if not key or not all(33 <= b < 127 for b in key):
        raise InputError(
            f"The API key file '{path}' must hold one key of printable ASCII, without spaces."
        )
    return key


def run(args) -> int:
    from ..cli import EXIT_OK
    from ..errors import InputError

    try:
        from ..rewrite.readings import parse_readings
        from .models import load_all
        from .server import MAX_REQUEST_BYTES, Server, Service
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise InputError(
            f"`onnxscope serve` needs the serve extra ({exc.name} is missing): "
            "pip install 'onnxscope[serve]'."
        ) from None
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.model:
        raise InputError("serve needs at least one MODEL.")
    api_key = _api_key(args.api_key_file)
    models = load_all(
        args.model,
        input_shapes=dict(args.input_shape),
        readings=parse_readings(args.readings),
        output=args.output_name,
        wrt=args.wrt,
        logits=args.logits,
        mode=args.mode,
        providers=args.device,
        max_batch=args.max_batch,
        threads=args.threads,
    )
    devices = {m.device for m in models}  # (every session made before the server listens)
    if args.device == "cuda" and devices != {"cuda"}:
        raise InputError("--device cuda: ONNX Runtime's CUDA provider is not available here.")
    service = Service(
        models, api_key=api_key, max_request_bytes=args.max_request_bytes or MAX_REQUEST_BYTES
    )
    explorers = None
    if args.explore and api_key is not None:
        raise InputError(
            "--explore cannot be used with --api-key-file: a browser page sends no API key. "
            "Run the explorer on a server of its own (onnxscope explore, on 127.0.0.1)."
        )
    if args.explore:
        from .explore.commands import explorers_for

        explorers = explorers_for(models, args, args.image)
    server = Server(
        service,
        host=args.host,
        port=args.port,
        grpc_port=None if args.no_grpc else args.grpc_port,
        explorers=explorers,
    )

    def ready(server: Server) -> None:
        lines = [f"onnxscope serve: {len(models)} models on {args.device}, ready"]
        lines.append(f"  REST  {server.http_url}/v2  (metrics: {server.http_url}/metrics)")
        if server.grpc_address:
            lines.append(f"  gRPC  {server.grpc_address}")
        lines += [f"  model {m.name}" for m in models]
        if explorers:
            from .explore.commands import urls

            lines += urls(server, explorers)
        print("\n".join(lines), flush=True)

    server.run(ready)
    print("onnxscope serve: stopped", file=sys.stderr)
    return EXIT_OK
