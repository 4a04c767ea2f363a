"""The output folder of `onnxscope batch`, kept up to date while the run goes on.

OUT holds batch.json (the run's settings and the list of files, onnxscope's output marker),
results.parquet (one row per input), votes/*.npy (with --save votes), and at the end index.html
with its figures and reports/*/ (per-input reports). Each file is replaced atomically
(onnxscope.files.outputs.publish_file), the table at least every FLUSH_SECONDS and at the end, so
a run killed at any point leaves a readable table of what it finished, and the next run with the
same settings goes on from there. OUT is used only if it is missing, empty or an earlier batch
folder; a folder of other files is refused with nothing touched.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time

import numpy as np

from ..errors import InputError
from ..files.outputs import MARK, OutputError, check_folder, publish_file, sweep_leftovers
from .job import row_schema

KIND, INDEX, TABLE = "batch", "batch.json", "results.parquet"
FLUSH_SECONDS = 5.0


class BatchFolder:
    """The results in OUT: the rows by input key, written back with `flush`."""

    def __init__(self, out, settings: dict, targets, sources=(), restart: bool = False):
        self.out = check_folder(out, kind=KIND, index=INDEX, sources=sources)
        self.sources, self.settings, self.targets = sources, settings, tuple(targets)
        self.files: list[str] = [INDEX, TABLE]
        self.rows: dict[str, dict] = {}
        self.order: dict[str, int] = {}  # the inputs' order, kept by the table (engines finish
        # their batches in any order)
        self._flushed = time.monotonic()
        index = os.path.join(self.out, INDEX)
        if os.path.isfile(index):
            earlier = _read_json(index)
            listed = earlier.get(MARK, {}).get("files", [])
            for name in listed:  # temporary files of a run killed while it wrote
                sweep_leftovers(os.path.join(self.out, name))
            if earlier.get("settings") != settings and not restart:
                differ = sorted(
                    k
                    for k in {*settings, *earlier.get("settings", {})}
                    if settings.get(k) != earlier.get("settings", {}).get(k)
                )
                raise OutputError(
                    f"'{self.out}' holds the results of a batch run with other settings "
                    f"({', '.join(differ)} differ); choose another -o, or pass --restart to "
                    "replace them."
                )
            self.files = list(dict.fromkeys([*self.files, *listed]))  # (ours also on --restart)
            if not restart:
                self.rows = {r["path"]: r for r in _read_table(os.path.join(self.out, TABLE))}

    def done(self) -> set[str]:
        """Keys of the inputs that finished without error (a resumed run skips them)."""
        return {key for key, row in self.rows.items() if row.get("error") is None}

    def add(self, rows: list[dict], extras: dict[str, dict]) -> None:
        """Take finished rows (with their vote maps, written to votes/ here) and flush the table
        if it was last written FLUSH_SECONDS ago."""
        for row in rows:
            maps = row.pop("votes", None)
            if isinstance(maps, bytes):
                maps = np.load(io.BytesIO(maps), allow_pickle=False)
            if maps is not None:
                name = f"votes/{file_name(row['path'])}.npy"
                self._listed(name)
                buffer = io.BytesIO()
                np.save(buffer, maps)
                self._write(name, buffer.getvalue())
                row["votes_file"] = name
            self.rows[row["path"]] = {**row, **extras.get(row["path"], {})}
        if time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write results.parquet (every row so far) and batch.json, each atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        last = len(self.order)
        rows = sorted(self.rows.values(), key=lambda r: self.order.get(r["path"], last))
        saved = any("votes_file" in r for r in rows)
        schema = row_schema(self.targets, "file" if saved else None)
        columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
        table = pa.table(columns, schema=schema)
        for extra in dict.fromkeys(k for r in rows for k in r if k not in columns):
            table = table.append_column(extra, pa.array([r.get(extra) for r in rows]))
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self._write(TABLE, buffer.getvalue())
        self._write_index()
        self._flushed = time.monotonic()

    def publish(self, files: dict[str, bytes]) -> None:
        """Write more files into OUT (index.html, its figures), listed before they are written."""
        for name in files:
            self._listed(name)
        for name, data in files.items():
            self._write(name, data)
        self._write_index()

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def _listed(self, name: str) -> None:
        """List `name` in batch.json before it is written: a run killed in between leaves a
        listed file missing, never a file of ours that the next run would take for a user's."""
        if name not in self.files:
            self.files.append(name)
            self._write_index()

    def _write(self, name: str, data: bytes) -> None:
        publish_file(os.path.join(self.out, name), data, sources=self.sources)

    def _write_index(self) -> None:
        index = {
            MARK: {"kind": KIND, "files": self.files},
            "settings": self.settings,
            "rows": len(self.rows),
            "failed": sum(r.get("error") is not None for r in self.rows.values()),
        }
        data = json.dumps(index, indent=1).encode()
        publish_file(os.path.join(self.out, INDEX), data, sources=self.sources)


def model_digest(path: str) -> str:
    """sha256 of the model file (a resumed run must read the same model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_name(key: str) -> str:
    """A file name for an input's key: its base name, made safe, and a hash of the whole key."""
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(key))[:48]
    return f"{base}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"Could not read '{path}': {exc}") from None
    return found if isinstance(found, dict) else {}


def _read_table(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:
        raise InputError(
            f"Could not read the earlier results '{path}' ({exc}); pass --restart to start over."
        ) from None
