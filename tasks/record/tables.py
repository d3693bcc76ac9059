"""Generic hive-partitioned Parquet tables on any fsspec URL, written whole or not at all."""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from datetime import UTC, datetime

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tasks.config.run import OutputConfig

UTC_TS = pa.timestamp("us", tz="UTC")


PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")




def open_output(output: OutputConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(output.url, **output.storage_options)
    return fs, root.rstrip("/")


PARTIAL = "_partial"  # beside the partitions: a run's temporary files, never inside a directory compaction swaps


def put_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes, staging: str | None = None) -> None:
    """Write a file that readers see whole or not at all (rename locally, one PUT on object stores).

    Locally the temporary file goes to `staging` when given (else beside `path`), and is removed if the write fails
    (a full disk leaves no 0-byte file behind)."""
    if isinstance(fs, LocalFileSystem):
        directory, name = path.rsplit("/", 1)
        fs.makedirs(directory, exist_ok=True)
        if staging:
            fs.makedirs(staging, exist_ok=True)
        tmp = f"{staging or directory}/.{name}.{uuid.uuid4().hex[:6]}.partial"  # hidden, not *.parquet: never read
        try:
            with fs.open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_table(table: pa.Table, output: OutputConfig, run_id: str, label: str = "part") -> list[str]:
    """Write a ledger table as one file per date partition."""
    if table.num_rows == 0:
        return []
    fs, root = open_output(output)
    dates = pc.strftime(table["created_at"], format="%Y-%m-%d")
    written = []
    for date in sorted(set(dates.to_pylist())):
        path = f"{root}/date={date}/{label}-{run_id}-{uuid.uuid4().hex[:12]}.parquet"
        put_atomic(fs, path, parquet_bytes(table.filter(pc.equal(dates, date))), f"{root}/{PARTIAL}/{run_id}")
        written.append(fs.unstrip_protocol(path))
    return written


def dataset(output: OutputConfig, schema: pa.Schema) -> ds.Dataset | None:
    """The table under `output` as one pyarrow dataset (`schema` plus its `date` partition), or None when empty."""
    fs, root = open_output(output)
    fs.invalidate_cache()  # other runs and workers write here too: list afresh
    if not fs.exists(root):
        return None
    try:
        data = ds.dataset(root, filesystem=fs, format="parquet", partitioning=PARTITIONING,
                          schema=schema.append(pa.field("date", pa.string())))  # older files lack newer columns
    except (FileNotFoundError, pa.ArrowInvalid):
        return None
    return data if data.files else None


def read_table(output: OutputConfig, schema: pa.Schema, columns: list[str] | None = None,
               identity: tuple[str, ...] = (), attempts: int = 5) -> pa.Table | None:
    """The table's rows, repeats of an `identity` dropped; a listing that a compaction swapped away is read again."""
    for attempt in range(attempts):
        data = dataset(output, schema)
        if data is None:
            return None
        try:
            table = data.to_table(columns=columns)
            break
        except (FileNotFoundError, OSError) as e:  # the partition was swapped between listing and reading
            if attempt == attempts - 1 or not isinstance(e, FileNotFoundError) and "No such file" not in str(e):
                raise
            time.sleep(0.05 * (attempt + 1))
    if identity and set(identity) <= set(table.column_names):
        table = distinct_rows(table, identity)
    return table


def distinct_rows(table: pa.Table, identity: tuple[str, ...]) -> pa.Table:
    """Drop rows whose identity repeats (an object-store compaction's old and new files seen together)."""
    ident = table.select(list(identity)).append_column("_i", pa.array(np.arange(table.num_rows)))
    first = ident.group_by(list(identity), use_threads=False).aggregate([("_i", "min")])["_i_min"]
    if len(first) == table.num_rows:
        return table
    return table.take(np.sort(first.to_numpy()))


def now_utc() -> datetime:
    return datetime.now(UTC)
