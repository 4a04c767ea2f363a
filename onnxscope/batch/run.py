"""`run_batch`: interpret every input of a dataset and keep the results in a folder."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from ..errors import InputError
from .engines import ENGINES, RUNNERS
from .folder import BatchFolder, model_digest
from .inputs import Item, enumerate_inputs
from .job import JobSpec


@dataclass
class BatchSummary:
    """What a run did: `rows` in the table, `failed` among them, `skipped` (done by an earlier
    run), `interpreted` now, and the paths of the table and the page."""

    rows: int
    failed: int
    unverified: int  # rows whose exactness checks failed
    skipped: int
    interpreted: int
    seconds: float
    table: str
    page: str | None


def run_batch(
    model,
    inputs: list[str],
    out,
    *,
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    path_column: str = "path",
    restart: bool = False,
    page: bool = True,
    reports: int = 3,
    progress: bool | None = None,
    **job_options,
) -> BatchSummary:
    """Interpret every input named by `inputs` (onnxscope.batch.inputs) with `model` and keep a
    row per input in `out`/results.parquet, then write `out`/index.html (`page`), with per-input
    reports of the `reports` most and least bias-reliant inputs. `progress`: None a bar on a
    terminal and a line every 10 s otherwise, True the bar, False nothing. Inputs already in
    `out` from an earlier run with the same settings are skipped. `job_options`: the JobSpec
    fields (targets, labels, conventions, resize, logits, mode, device, threads, verify, save_votes,
    batch_size)."""
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, not {engine!r}.")
    model = os.fspath(model)
    if not os.path.isfile(model):
        raise InputError(f"Model file '{model}' does not exist or is not a file.")
    spec = JobSpec(model=model, **job_options)
    if spec.batch_size < 1:
        raise InputError(f"The batch size must be at least 1, not {spec.batch_size}.")
    items = enumerate_inputs(inputs, path_column)
    sources = [("input model", model)] + [(f"input '{i.key}'", i.source) for i in items]
    settings = {**spec.settings(), "model_sha256": model_digest(model)}
    folder = BatchFolder(out, settings, spec.targets, sources, restart)
    folder.order = {item.key: k for k, item in enumerate(items)}
    done = folder.done()
    todo = [i for i in items if i.key not in done]
    extras = {i.key: i.extra for i in items if i.extra}
    bar = Progress(
        len(todo), sys.stderr.isatty() if progress is None else progress, quiet=progress is False
    )
    start = time.monotonic()
    chunks = [todo[k : k + spec.batch_size] for k in range(0, len(todo), spec.batch_size)]
    runner = RUNNERS[engine]
    try:
        for rows in runner(spec, chunks, workers=workers, address=address):
            folder.add(rows, extras)
            bar.advance(len(rows), sum(r.get("error") is not None for r in rows))
    finally:
        folder.flush()  # what finished is kept, also when the run is interrupted
        bar.close()
    seconds = time.monotonic() - start
    page_path = None
    if page:
        try:
            from .page import write_page
        except ImportError:  # (page.py is being written)
            write_page = None
        if write_page is not None:
            page_path = write_page(folder, spec, items, reports)
    rows = list(folder.rows.values())
    return BatchSummary(
        rows=len(rows),
        failed=sum(r.get("error") is not None for r in rows),
        unverified=sum(r.get("verified") is False for r in rows),
        skipped=len(items) - len(todo),
        interpreted=len(todo),
        seconds=seconds,
        table=folder.path("results.parquet"),
        page=page_path,
    )


class Progress:
    """Progress on stderr: a bar with rate and ETA on a terminal, else a line every
    LINE_SECONDS (and at the end)."""

    LINE_SECONDS = 10.0

    def __init__(self, total: int, terminal: bool, stream=None, quiet: bool = False):
        self.total, self.terminal, self.stream = total, terminal, stream or sys.stderr
        self.quiet = quiet  # nothing at all (progress=False)
        self.count = self.failed = 0
        self.start = self.last = time.monotonic()

    def advance(self, count: int, failed: int = 0) -> None:
        self.count += count
        self.failed += failed
        now = time.monotonic()
        if self.quiet:
            return
        if self.terminal:
            self.stream.write("\r" + self._line(now, bar=True))
            self.stream.flush()
        elif now - self.last >= self.LINE_SECONDS:
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()
            self.last = now

    def close(self) -> None:
        if self.total and not self.quiet:
            end = "\n" if self.terminal else ""
            self.stream.write(("\r" if self.terminal else "") + self._line(time.monotonic()) + end)
            if not self.terminal:
                self.stream.write("\n")
            self.stream.flush()

    def _line(self, now: float, bar: bool = False) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        left = (self.total - self.count) / rate if rate > 0 else float("nan")
        eta = f"{left:.0f} s" if left == left else "?"
        width = 24
        filled = width * self.count // max(self.total, 1)
        shown = f"[{'#' * filled}{'.' * (width - filled)}] " if bar else "batch: "
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{shown}{self.count}/{self.total} inputs{failed}, {rate:.2f}/s, "
            f"{elapsed:.0f} s elapsed, ETA {eta}"
        )


__all__ = ["BatchSummary", "Item", "run_batch"]
