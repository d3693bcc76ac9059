"""The Parquet ledger: one row per finished item, hive-partitioned by date, written whole or not at all.

Append-only: the latest row of a request_key (by created_at) is that key's state. Finished rows go
first to a journal beside the ledger (`_journal/`, one small file per row, written as each answer
arrives) and reach the ledger in batches (every `flush_rows` rows or `flush_seconds`); a run that
dies loses only its requests in flight, because the next run moves a dead run's journal into the ledger.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

import fsspec
import numpy as np
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
    # added after v1
    ("source_key", pa.string()),       # request_key of the whole object: every segment row of a video shares it
    ("segment_count", pa.int32()),     # how many segments the object was cut into
    ("media_ops", pa.string()),        # what was done to the video before sending: cut:copy, transcode, shrink:480p ...
    ("request_id", pa.string()),       # the HTTP request a row's video went in; packed rows share it
    ("pack_size", pa.int32()), ("pack_index", pa.int32()),  # usage is on pack_index 0 only: sums stay true
    ("repairs", pa.int32()),           # repair requests sent after an answer failed its check (JSON schema)
    ("stage", pa.string()),            # null: a request about videos; "reduce": a text-only whole-video call
])
COLUMNS = SCHEMA.names
PARTITIONING = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
DATASET_SCHEMA = SCHEMA.append(pa.field("date", pa.string()))  # older files lack newer columns: read as null
ROW_IDENTITY = ("request_key", "run_id", "created_at")  # one finished attempt at one key
JOURNAL, STATE, LEASE = "_journal", "_state", "lease.json"  # beside the partitions: readers skip _ and . names
RETRYABLE_ERRORS = {"retryable", "rate_limited", "server", "transport", "malformed_response"}
ALWAYS_RETRIED = {"not_attempted"}  # recorded by a run that stopped before sending them


def open_output(output: OutputConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(output.url, **output.storage_options)
    return fs, root.rstrip("/")


def put_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a file that readers see whole or not at all (rename locally, one PUT on object stores)."""
    if isinstance(fs, LocalFileSystem):
        directory, name = path.rsplit("/", 1)
        fs.makedirs(directory, exist_ok=True)
        tmp = f"{directory}/.{name}.{uuid.uuid4().hex[:6]}.partial"  # hidden and not *.parquet: no reader picks it up
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    else:
        fs.pipe_file(path, data)


def to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows as a table of the ledger schema; unknown keys are an error, missing ones are null."""
    rows = list(rows)
    for r in rows:
        extra = set(r) - set(COLUMNS)
        if extra:
            raise ValueError(f"ledger row has columns outside the schema: {sorted(extra)}")
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)


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
        put_atomic(fs, path, parquet_bytes(table.filter(pc.equal(dates, date))))
        written.append(fs.unstrip_protocol(path))
    return written


def write_rows(rows: list[dict], output: OutputConfig, run_id: str) -> list[str]:
    """Write rows straight to the ledger (no journal)."""
    return write_table(to_table(rows), output, run_id)


def dataset(output: OutputConfig) -> ds.Dataset | None:
    """The ledger as one pyarrow dataset, or None when nothing was written yet."""
    fs, root = open_output(output)
    fs.invalidate_cache()  # other runs and workers write here too: list afresh
    if not fs.exists(root):
        return None
    try:
        data = ds.dataset(root, filesystem=fs, format="parquet", partitioning=PARTITIONING, schema=DATASET_SCHEMA)
    except (FileNotFoundError, pa.ArrowInvalid):
        return None
    return data if data.files else None


def read_table(output: OutputConfig, columns: list[str] | None = None, attempts: int = 5) -> pa.Table | None:
    """The ledger's rows, identical copies dropped; a listing that a compaction swapped away is read again."""
    for attempt in range(attempts):
        data = dataset(output)
        if data is None:
            return None
        try:
            table = data.to_table(columns=columns)
            break
        except (FileNotFoundError, OSError) as e:  # the partition was swapped between listing and reading
            if attempt == attempts - 1 or not isinstance(e, FileNotFoundError) and "No such file" not in str(e):
                raise
            time.sleep(0.05 * (attempt + 1))
    if set(ROW_IDENTITY) <= set(table.column_names):
        table = _distinct_rows(table)
    return table


def _distinct_rows(table: pa.Table) -> pa.Table:
    """Drop rows whose identity repeats (an object-store compaction's old and new files seen together)."""
    ident = table.select(list(ROW_IDENTITY)).append_column("_i", pa.array(np.arange(table.num_rows)))
    first = ident.group_by(list(ROW_IDENTITY), use_threads=False).aggregate([("_i", "min")])["_i_min"]
    if len(first) == table.num_rows:
        return table
    return table.take(np.sort(first.to_numpy()))


def read_ledger(output: OutputConfig) -> pd.DataFrame:
    """The whole ledger as a DataFrame (for reports and tests; large ledgers want DuckDB or a filter)."""
    table = read_table(output)
    if table is None:
        return pd.DataFrame(columns=COLUMNS + ["date"])
    nullable = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=nullable.get)


@dataclass(frozen=True)
class KeyState:
    """The latest row of a request_key."""

    status: str
    error_type: str | None
    source_key: str
    segment_count: int


def latest_state(output: OutputConfig) -> dict[str, KeyState]:
    """request_key -> the state its latest row records."""
    table = read_table(output, ["request_key", "created_at", "status", "error_type", "source_key", "segment_count"])
    if table is None:
        return {}
    t = table.take(pc.sort_indices(table, [("created_at", "ascending")]))
    return {k: KeyState(s, e, src or k, n or 1) for k, s, e, src, n in zip(
        *(t[c].to_pylist() for c in ("request_key", "status", "error_type", "source_key", "segment_count")))}


def ok_keys(output: OutputConfig) -> set[str]:
    """request_keys whose latest row is ok."""
    return {k for k, st in latest_state(output).items() if st.status == "ok"}


def finished_keys(state: dict[str, KeyState], retry_failed: bool = False, all_errors: bool = False,
                  force: bool = False) -> set[str]:
    """Keys a run skips: ok ones, and errors unless asked to retry them (retryable ones, or all)."""
    if force:
        return set()
    done = set()
    for key, st in state.items():
        if st.status == "ok":
            done.add(key)
        elif st.error_type in ALWAYS_RETRIED or all_errors:
            continue
        elif not (retry_failed and st.error_type in RETRYABLE_ERRORS):
            done.add(key)
    return done


def finished_sources(state: dict[str, KeyState], finished: set[str]) -> set[str]:
    """source_keys all of whose segments are finished: such objects need not even be probed again."""
    count: dict[str, int] = {}
    need: dict[str, int] = {}
    for key, st in state.items():
        need[st.source_key] = max(need.get(st.source_key, 0), st.segment_count)
        count[st.source_key] = count.get(st.source_key, 0) + (key in finished)
    return {src for src, n in need.items() if count[src] >= n}


class LedgerWriter:
    """Journals each finished row at once and flushes rows to the ledger every N rows or T seconds."""

    def __init__(self, output: OutputConfig, run_id: str, clock=time.monotonic):
        self.output, self.run_id, self._clock = output, run_id, clock
        self.fs, self.root = open_output(output)
        self.journal_dir = f"{self.root}/{JOURNAL}/{run_id}"
        self._rows: list[dict] = []
        self._journaled: list[str] = []
        self._last_flush = clock()
        self.files: list[str] = []
        self.rows_written = 0
        self._lock = threading.RLock()  # rows arrive from several threads (asyncio.to_thread): a flush must not drop one
        if output.journal:
            self._lease()

    def _lease(self) -> None:
        """Say this run is alive, so that no other run takes over its journal."""
        lease = {"host": socket.gethostname(), "pid": os.getpid(), "updated_at": now_utc().isoformat()}
        put_atomic(self.fs, f"{self.journal_dir}/{LEASE}", json.dumps(lease).encode())

    def add(self, row: dict) -> None:
        """Record one finished row: journal it, then flush if the policy says so."""
        if self.output.journal:
            path = f"{self.journal_dir}/{uuid.uuid4().hex}.jrnl"
            put_atomic(self.fs, path, parquet_bytes(to_table([row])))
        with self._lock:
            if self.output.journal:
                self._journaled.append(path)
            self._rows.append(row)
            if len(self._rows) >= self.output.flush_rows or \
                    self._clock() - self._last_flush >= self.output.flush_seconds:
                self.flush()

    def flush(self) -> None:
        """Write the buffered rows as ledger files, then drop their journal entries."""
        with self._lock:
            self._last_flush = self._clock()
            if self._rows:
                self.files += write_table(to_table(self._rows), self.output, self.run_id)
                self.rows_written += len(self._rows)
                if self._journaled:
                    self.fs.rm(self._journaled)
                self._rows, self._journaled = [], []
            if self.output.journal:
                self._lease()

    def close(self) -> None:
        """Flush what is left and remove this run's journal."""
        self.flush()
        if self.output.journal and self.fs.exists(self.journal_dir):
            self.fs.rm(self.journal_dir, recursive=True)


def _lease_expired(fs, run_dir: str, stale_after_s: float) -> bool:
    """A run is dead when its lease names a process of this host that is gone, or was not renewed in time."""
    try:
        lease = json.loads(fs.cat_file(f"{run_dir}/{LEASE}"))
        updated = datetime.fromisoformat(lease["updated_at"])
    except (FileNotFoundError, ValueError, KeyError):
        return True
    if lease.get("host") == socket.gethostname():
        try:
            os.kill(int(lease["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            pass
    return (now_utc() - updated).total_seconds() > stale_after_s


def recover_journal(output: OutputConfig, recovering_run: str) -> int:
    """Move rows journaled by runs that died into the ledger; return how many were recovered."""
    fs, root = open_output(output)
    fs.invalidate_cache()
    try:
        run_dirs = [d for d in fs.ls(f"{root}/{JOURNAL}", detail=False) if not d.endswith("/" + recovering_run)]
    except FileNotFoundError:
        return 0
    stale_after = 2 * output.flush_seconds + 120
    dead = [d for d in run_dirs if fs.isdir(d) and _lease_expired(fs, d, stale_after)]
    paths = sorted(p for d in dead for p in fs.ls(d, detail=False) if p.endswith(".jrnl"))
    tables = []
    for p in paths:
        try:
            tables.append(pq.read_table(io.BytesIO(fs.cat_file(p)), schema=SCHEMA))
        except (pa.ArrowInvalid, OSError):
            continue  # cut short by the crash itself: that row was never whole, the rerun sends it again
    journal = pa.concat_tables(tables) if tables else to_table([])
    existing = read_table(output, list(ROW_IDENTITY)) if journal.num_rows else None
    if existing is not None:
        seen = set(zip(*(existing[c].to_pylist() for c in ROW_IDENTITY)))
        keep = [ident not in seen for ident in zip(*(journal[c].to_pylist() for c in ROW_IDENTITY))]
        journal = journal.filter(pa.array(keep, pa.bool_()))
    write_table(journal, output, recovering_run, label="recovered")
    for d in dead:
        fs.rm(d, recursive=True)
    return journal.num_rows


@dataclass(frozen=True)
class Watermark:
    """The start of a job's last successful run: objects modified since then are new."""

    job: str
    started_at: datetime
    run_id: str


def _state_path(root: str, job: str) -> str:
    return f"{root}/{STATE}/{job}.watermark.json"


def read_watermark(output: OutputConfig, job: str) -> Watermark | None:
    fs, root = open_output(output)
    try:
        data = json.loads(fs.cat_file(_state_path(root, job)))
    except FileNotFoundError:
        return None
    return Watermark(job, datetime.fromisoformat(data["started_at"]), data["run_id"])


def write_watermark(output: OutputConfig, mark: Watermark) -> None:
    fs, root = open_output(output)
    body = {"job": mark.job, "started_at": mark.started_at.isoformat(), "run_id": mark.run_id,
            "written_at": now_utc().isoformat()}
    put_atomic(fs, _state_path(root, mark.job), json.dumps(body, indent=1).encode())


def watermark_since(output: OutputConfig, job: str) -> datetime | None:
    """Where an incremental run starts listing: the last successful run's start, less the overlap."""
    mark = read_watermark(output, job)
    return mark.started_at - timedelta(seconds=output.watermark_overlap_s) if mark else None


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
