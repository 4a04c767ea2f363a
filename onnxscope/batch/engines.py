"""Where the batches run. Each engine takes the job's spec and the chunks of items (a list of
`Item`s per batch) and yields the rows of each chunk as it finishes (in any order):

- `local`: in this process, one LinearScope, ONNX Runtime using every core (the default:
  bench/bench_batch.py measured it against a process pool with the cores split between workers);
- `processes`: a pool of worker processes, each with its own LinearScope and cores/workers ONNX
  Runtime threads;
- `ray`: Ray Data (`onnxscope[ray]`): the chunks as a dataset, `map_batches` on an actor pool
  (one BatchJob per actor, `num_gpus=1` per actor under CUDA), the rows written as Parquet by
  Ray into a temporary folder (removed after) and read back from there into OUT's table.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import tempfile
from collections.abc import Iterator

import numpy as np

from ..errors import OnnxscopeError
from .inputs import Item
from .job import BatchJob, JobSpec, row_schema

ENGINES = ("local", "processes", "ray")


def run_local(spec: JobSpec, chunks: list[list[Item]], **_) -> Iterator[list[dict]]:
    job = BatchJob(spec)
    for chunk in chunks:
        yield job(chunk)


_WORKER_JOB: BatchJob | None = None


def _start_worker(spec: JobSpec) -> None:
    global _WORKER_JOB
    _WORKER_JOB = BatchJob(spec)


def _work(chunk: list[Item]) -> list[dict]:
    assert _WORKER_JOB is not None
    return _WORKER_JOB(chunk)


def run_processes(
    spec: JobSpec, chunks: list[list[Item]], workers: int | None = None, **_
) -> Iterator[list[dict]]:
    import concurrent.futures as cf
    import multiprocessing

    cores = os.cpu_count() or 1
    workers = workers or cores
    threads = spec.threads or max(1, cores // workers)
    spec = dataclasses.replace(spec, threads=threads)
    context = multiprocessing.get_context("spawn")  # no forked ONNX Runtime thread pools
    with cf.ProcessPoolExecutor(workers, context, _start_worker, (spec,)) as pool:
        futures = [pool.submit(_work, chunk) for chunk in chunks]
        for future in cf.as_completed(futures):
            yield future.result()


class _RayWorker:
    """One actor of the Ray engine: a BatchJob, fed a pyarrow batch of item references."""

    def __init__(self, spec: JobSpec):
        self.job = BatchJob(spec)
        self.schema = row_schema(spec.targets, "bytes" if spec.save_votes else None)

    def __call__(self, batch):
        import pyarrow as pa

        items = [
            Item(key, source, None if row < 0 else int(row))
            for key, source, row in zip(
                batch["key"].to_pylist(), batch["source"].to_pylist(), batch["row"].to_pylist()
            )
        ]
        rows = self.job(items)
        for row in rows:
            if "votes" in row:
                buffer = io.BytesIO()
                np.save(buffer, row["votes"])
                row["votes"] = buffer.getvalue()
        columns = {f.name: [r.get(f.name) for r in rows] for f in self.schema}
        return pa.table(columns, schema=self.schema)


def run_ray(
    spec: JobSpec,
    chunks: list[list[Item]],
    workers: int | None = None,
    address: str | None = None,
    **_,
) -> Iterator[list[dict]]:
    """The chunks on Ray Data (a local Ray of this machine's cores, or the cluster at
    `address`); Ray writes the rows as Parquet into a temporary folder, read back once it has
    finished."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise OnnxscopeError("--engine ray needs Ray Data: `pip install onnxscope[ray]`.") from None
    import pyarrow.parquet as pq

    items = [item for chunk in chunks for item in chunk]
    if not items:
        return
    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else (os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # onnxscope's own progress line says how far it is
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    records = [
        {"key": i.key, "source": os.path.abspath(i.source), "row": -1 if i.row is None else i.row}
        for i in items
    ]
    cuda = spec.device == "cuda"
    cpus = max(1, int(ray.available_resources().get("CPU", 1)))
    workers = workers or (1 if cuda else cpus)
    # each actor's ONNX Runtime on its share of the cores (as for the process pool)
    spec = dataclasses.replace(spec, threads=spec.threads or max(1, cpus // workers))
    ds = ray.data.from_items(records, override_num_blocks=max(1, len(chunks)))
    ds = ds.map_batches(
        _RayWorker,
        fn_constructor_kwargs={"spec": spec},
        batch_size=spec.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=1 if cuda else 0,
        num_cpus=1,
    )
    with tempfile.TemporaryDirectory(prefix="onnxscope-ray-") as parts:
        ds.write_parquet(parts)
        for name in sorted(f for f in os.listdir(parts) if f.endswith(".parquet")):
            yield pq.read_table(os.path.join(parts, name)).to_pylist()


RUNNERS = {"local": run_local, "processes": run_processes, "ray": run_ray}
