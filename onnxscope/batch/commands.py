"""`onnxscope batch MODEL INPUTS... -o OUT`: interpret a dataset, one row per input.

Exit status: 0 every input interpreted and verified exact; 1 an input failed (its row has the
error) or did not verify; 2 the run could not start (bad model, OUT holds other files...).
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from ..cli import add_image_options, positive_int
    from .engines import ENGINES

    sp = sub.add_parser(
        "batch",
        help="interpret a dataset (folder, glob, .npy stack, table): results.parquet + index.html",
        description="Interpret every input of INPUTS with MODEL: OUT/results.parquet holds one "
        "row per input (prediction, Σ votes, bias and bias share of each class asked for, the "
        "exactness errors, the error of an input that failed), OUT/index.html a summary. A run "
        "again with the same settings skips the inputs already done.",
    )
    arg = sp.add_argument
    arg("model", help="path to the .onnx model (never modified)")
    arg(
        "inputs",
        nargs="+",
        metavar="INPUTS",
        help="a folder of images, a glob ('data/**/*.png'), a .npy stack [N, ...], or a "
        ".parquet/.csv table with a column of paths",
    )
    arg(
        "-o",
        "--output",
        required=True,
        help="output folder: created, or continued if it holds an earlier run with the same "
        "settings",
    )
    arg(
        "--class",
        dest="targets",
        action="append",
        metavar="K|LABEL|top",
        help="class to explain, by index, label or 'top' (each input's predicted class; the "
        "default); repeat for several",
    )
    arg("--output-name", help="which model output (default: the only one)")
    arg("--wrt", help="the input to interpret (default: the first float input)")
    add_image_options(sp)
    arg("--no-resize", action="store_true", help="fail inputs whose size is not the model's")
    arg("--path-column", default="path", help="the table's column of paths ('path')")
    arg("--batch-size", type=positive_int, default=16, help="inputs per run of the model (16)")
    arg("--engine", choices=ENGINES, default="local", help="where to run (local: this process)")
    arg("--workers", type=positive_int, help="processes or Ray actors (default: one per core)")
    arg("--address", help="Ray cluster address (--engine ray; default: a local Ray)")
    arg("--device", default="cpu", choices=["cpu", "cuda"], help="where the sessions run")
    arg("--threads", type=positive_int, help="ONNX Runtime intra-op threads (default: all cores)")
    arg(
        "--save",
        action="append",
        choices=["votes"],
        default=[],
        help="also keep each input's vote maps as OUT/votes/*.npy",
    )
    arg("--no-verify", action="store_true", help="skip the exactness checks (faster)")
    arg(
        "--reports",
        type=int,
        default=3,
        help="per-input reports of the N most and least bias-reliant inputs (3)",
    )
    arg("--no-page", action="store_true", help="do not write index.html")
    arg("--restart", action="store_true", help="discard OUT's earlier results")
    arg(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal; else a line every 10 s)",
    )
    sp.set_defaults(func=run)


def run(args) -> int:
    from ..cli import EXIT_CHECK_FAILED, EXIT_OK, IMAGE_CONVENTIONS
    from .run import run_batch

    conventions = {k: getattr(args, k) for k in IMAGE_CONVENTIONS if getattr(args, k) is not None}
    summary = run_batch(
        args.model,
        args.inputs,
        args.output,
        engine=args.engine,
        workers=args.workers,
        address=args.address,
        path_column=args.path_column,
        restart=args.restart,
        page=not args.no_page,
        reports=max(args.reports, 0),
        progress=args.progress,
        wrt=args.wrt,
        output=args.output_name,
        targets=tuple(args.targets or ["top"]),
        labels=tuple(args.labels) if args.labels else None,
        conventions=conventions,
        resize=not args.no_resize,
        logits=args.logits,
        mode=args.mode,
        device=args.device,
        threads=args.threads,
        verify=not args.no_verify,
        save_votes="votes" in args.save,
        batch_size=args.batch_size,
    )
    rate = summary.interpreted / summary.seconds if summary.seconds > 0 else 0.0
    print(
        f"{summary.rows} input(s) in {summary.table}: {summary.interpreted} interpreted now "
        f"({summary.seconds:.1f} s, {rate:.2f}/s), {summary.skipped} done before, "
        f"{summary.failed} failed, {summary.unverified} not verified exact."
    )
    if summary.page:
        print(summary.page)
    return EXIT_CHECK_FAILED if summary.failed or summary.unverified else EXIT_OK
