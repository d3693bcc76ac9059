"""Generic hive-partitioned Parquet tables on any fsspec URL, written whole or not at all."""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
from collections.abc import Iterable
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


def partition_dates(created_at: pa.ChunkedArray) -> pa.ChunkedArray:
    """The date partition (`date=YYYY-MM-DD`, the UTC date of created_at) each row is written to."""
    return pc.strftime(created_at, format="%Y-%m-%d")


def write_table(table: pa.Table, output: OutputConfig, run_id: str, label: str = "part") -> list[str]:
    """Write a ledger table as one file per date partition."""
    if table.num_rows == 0:
        return []
    fs, root = open_output(output)
    dates = partition_dates(table["created_at"])
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


def _swapped(e: OSError) -> bool:
    """A file listed a moment ago is gone: a compaction swapped its partition."""
    return isinstance(e, FileNotFoundError) or "No such file" in str(e)


def _read_again(read, attempts: int = 5):
    """`read()`, listed and read again while a compaction swaps the partition it was reading."""
    for attempt in range(attempts):
        try:
            return read()
        except (FileNotFoundError, OSError) as e:  # the partition was swapped between listing and reading
            if attempt == attempts - 1 or not _swapped(e):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable: the last attempt returns or raises")


def read_table(output: OutputConfig, schema: pa.Schema, columns: list[str] | None = None,
               identity: tuple[str, ...] = (), attempts: int = 5) -> pa.Table | None:
    """The table's rows, repeats of an `identity` dropped; a listing that a compaction swapped away is read again."""

    def read() -> pa.Table | None:
        data = dataset(output, schema)
        return data.to_table(columns=columns) if data is not None else None

    table = _read_again(read, attempts)
    if table is not None and identity and set(identity) <= set(table.column_names):
        table = distinct_rows(table, identity)
    return table


def partitions(output: OutputConfig) -> list[str]:
    """The table's date partitions (YYYY-MM-DD), oldest first: one listing of its top directory."""
    fs, root = open_output(output)
    fs.invalidate_cache()
    try:
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    except FileNotFoundError:
        return []
    return sorted(n.removeprefix("date=") for n in names if n.startswith("date="))


def read_partitions(output: OutputConfig, schema: pa.Schema, dates: Iterable[str], where: pc.Expression | None,
                    columns: list[str] | None = None) -> pa.Table | None:
    """The rows (matching `where`, when given) of these date partitions only: no other directory is listed or read
    (a row's partition is its created_at's UTC date, see write_table)."""
    fs, root = open_output(output)
    dates = sorted(set(dates))

    def read() -> pa.Table | None:
        fs.invalidate_cache()
        files = []
        for d in dates:
            try:
                files += sorted(p for p in fs.ls(f"{root}/date={d}", detail=False) if p.endswith(".parquet")
                                and not p.rsplit("/", 1)[-1].startswith((".", "_")))  # in the dataset's order
            except FileNotFoundError:
                continue
        if not files:
            return None
        return ds.dataset(files, filesystem=fs, format="parquet", schema=schema).to_table(columns=columns,
                                                                                         filter=where)

    return _read_again(read)


def distinct_rows(table: pa.Table, identity: tuple[str, ...]) -> pa.Table:
    """Drop rows whose identity repeats (an object-store compaction's old and new files seen together)."""
    ident = table.select(list(identity)).append_column("_i", pa.array(np.arange(table.num_rows)))
    first = ident.group_by(list(identity), use_threads=False).aggregate([("_i", "min")])["_i_min"]
    if len(first) == table.num_rows:
        return table
    return table.take(np.sort(first.to_numpy()))


def latest_rows(table: pa.Table, key: str = "request_key", order: tuple[str, ...] = ("created_at",)) -> pa.Table:
    """One row per `key`: the last by `order` (the last written on ties), in that order."""
    t = table.take(pc.sort_indices(table, [(c, "ascending") for c in order]))  # stable: ties keep their file order
    pos = t.select([key]).append_column("_p", pa.array(np.arange(t.num_rows)))
    last = pos.group_by(key, use_threads=False).aggregate([("_p", "max")])["_p_max"]
    return t.take(np.sort(last.to_numpy()))


def now_utc() -> datetime:
    return datetime.now(UTC)
