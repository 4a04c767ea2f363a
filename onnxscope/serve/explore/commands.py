"""`onnxscope explore MODEL [IMAGE]` (the explorer on its own server, REST only) and what
`onnxscope serve --explore` adds: explorers for the served models, and their URLs."""

from __future__ import annotations

import sys


def add_parser(sub) -> None:
    from ...cli import add_image_options, add_input_shape_option
    from ..commands import _port

    sp = sub.add_parser(
        "explore",
        help="explore a model in the browser: click an output or an input, see A_x live",
        description="Serve MODEL and its reading graphs (REST only) with the explorer page at "
        "/explore/NAME, and print its URL. IMAGE is the first input (default: the bundled "
        "face.png, else a drawn picture); others can be dropped on the page. Needs the serve "
        "extra.",
    )
    sp.add_argument("model", help="the .onnx model (never modified)")
    sp.add_argument("image", nargs="?", help="the first input: a PNG/JPEG or .npy file")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    sp.add_argument("--port", type=_port, default=8000, help="port (8000; 0: any free one)")
    sp.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    sp.add_argument("--output-name", help="the model output to read (default: the first)")
    add_input_shape_option(sp, "fix the shape of an input with free dims")
    add_image_options(sp)
    sp.set_defaults(func=run)


def conventions_of(args) -> dict:
    """The image conventions given on the command line (report's flags)."""
    from ...cli import IMAGE_CONVENTIONS

    return {k: getattr(args, k) for k in IMAGE_CONVENTIONS if getattr(args, k, None) is not None}


def explorers_for(models, args, image=None) -> dict:
    from . import make_explorers

    return make_explorers(
        models, image, conventions=conventions_of(args), labels=getattr(args, "labels", None)
    )


def urls(server, explorers) -> list[str]:
    return [f"  explore {server.http_url}/explore/{name}" for name in explorers]


def run(args) -> int:
    from ...cli import EXIT_OK
    from ..models import load_all
    from ..server import Server, Service

    models = load_all(
        [args.model], input_shapes=dict(args.input_shape), output=args.output_name,
        logits=args.logits, mode=args.mode, providers=args.device,
    )  # fmt: skip
    explorers = explorers_for(models, args, args.image)
    server = Server(Service(models), host=args.host, port=args.port, grpc_port=None,
                    explorers=explorers)  # fmt: skip

    def ready(server) -> None:
        print("\n".join(["onnxscope explore: ready (Ctrl-C stops)", *urls(server, explorers)]),
              flush=True)  # fmt: skip

    server.run(ready)
    print("onnxscope explore: stopped", file=sys.stderr)
    return EXIT_OK
