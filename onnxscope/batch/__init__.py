"""Batches and datasets: `onnxscope batch MODEL INPUTS -o OUT` and `run_batch`.

inputs.py names and loads the inputs, job.py is the per-batch callable (items -> rows) that every
engine runs (engines.py: in-process, a process pool, Ray Data), folder.py keeps OUT (the table,
vote maps, batch.json) up to date and resumable, page.py writes OUT/index.html, commands.py the
command line.
"""

from .run import BatchSummary, run_batch

__all__ = ["BatchSummary", "run_batch"]
