"""The Parquet ledger: one row per finished item, hive-partitioned by date, written whole or not at all."""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timezone
from typing import Iterable

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .config import OutputConfig

UTC_TS = pa.timestamp("us", tz="UTC")
# v1 columns (DESIGN.md); add, don't rename
SCHEMA = pa.schema([
    ("run_id", pa.string()), ("job", pa.string()), ("created_at", UTC_TS), ("request_key", pa.string()),
    ("source_uri", pa.string()), ("source_etag", pa.string()), ("source_size", pa.int64()),
    ("source_mtime", UTC_TS),
    ("segment_index", pa.int32()), ("segment_start_s", pa.float64()), ("segment_end_s", pa.float64()),
    ("video_duration_s", pa.float64()), ("has_audio", pa.bool_()), ("mime", pa.string()),
    ("provider", pa.string()), ("dialect", pa.string()), ("model", pa.string()), ("delivery", pa.string()),
    ("system_prompt", pa.string()), ("prompt", pa.string()), ("request_params", pa.string()),
    ("status", pa.string()), ("error_type", pa.string()), ("error_message", pa.string()),
    ("http_status", pa.int32()),
    ("output_text", pa.string()), ("output_json", pa.string()), ("finish_reason", pa.string()),
    ("response_id", pa.string()),
    ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("total_tokens", pa.int64()),
    ("estimated_prompt_tokens", pa.int64()), ("attempts", pa.int32()), ("latency_ms", pa.int64()),
])
COLUMNS = SCHEMA.names
PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


def _fs(output: OutputConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(output.url, **output.storage_options)
    return fs, root.rstrip("/")


def to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows as a table of the ledger schema; unknown keys are an error, missing ones are null."""
    rows = list(rows)
    for r in rows:
        extra = set(r) - set(COLUMNS)
        if extra:
            raise ValueError(f"ledger row has columns outside the schema: {sorted(extra)}")
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)


def write_rows(rows: list[dict], output: OutputConfig, run_id: str) -> list[str]:
    """Write rows as one Parquet file per date partition; each file appears whole or not at all."""
    if not rows:
        return []
    fs, root = _fs(output)
    table = to_table(rows)
    dates = pc.strftime(table["created_at"], format="%Y-%m-%d")
    written = []
    for date in sorted(set(dates.to_pylist())):
        part = table.filter(pc.equal(dates, date))
        buf = io.BytesIO()
        pq.write_table(part, buf, compression="zstd")
        name = f"part-{run_id}-{uuid.uuid4().hex[:12]}.parquet"
        directory = f"{root}/date={date}"
        path = f"{directory}/{name}"
        if isinstance(fs, LocalFileSystem):
            fs.makedirs(directory, exist_ok=True)
            tmp = f"{directory}/.{name}.partial"  # hidden, and not *.parquet: no reader or glob picks it up
            with fs.open(tmp, "wb") as f:
                f.write(buf.getvalue())
            fs.mv(tmp, path)  # rename within one directory is atomic
        else:
            fs.pipe_file(path, buf.getvalue())  # one PUT: the object exists whole or not at all
        written.append(fs.unstrip_protocol(path))
    return written


def dataset(output: OutputConfig) -> ds.Dataset | None:
    """The ledger as one pyarrow dataset, or None when nothing was written yet."""
    fs, root = _fs(output)
    if not fs.exists(root):
        return None
    try:
        return ds.dataset(root, filesystem=fs, format="parquet", partitioning=PARTITIONING,
                          exclude_invalid_files=False)
    except (FileNotFoundError, pa.ArrowInvalid):
        return None


def ok_keys(output: OutputConfig) -> set[str]:
    """request_keys that already have an ok row."""
    data = dataset(output)
    if data is None or not data.files:
        return set()
    table = data.to_table(columns=["request_key"], filter=ds.field("status") == "ok")
    return set(table["request_key"].to_pylist())


def read_ledger(output: OutputConfig) -> pd.DataFrame:
    """The whole ledger as a DataFrame (for reports and tests; large ledgers want DuckDB or a filter)."""
    data = dataset(output)
    if data is None or not data.files:
        return pd.DataFrame(columns=COLUMNS + ["date"])
    nullable = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype()}
    return data.to_table().to_pandas(types_mapper=nullable.get)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
