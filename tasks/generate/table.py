"""The generations table: every change of a prompt's task, append-only, in Parquet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.config.generate import GenerateOutputConfig
from tasks.config.run import OutputConfig
from tasks.generate.prompts import Prompt
from tasks.record.latest import LOOKUP_CHUNK, LatestStore, StoreSpec
from tasks.record.tables import UTC_TS, open_output, read_table, write_table

IN_PROGRESS = ("pending", "queued", "dreaming", "processing")


TERMINAL = ("completed", "failed")


STATE_SEEN = pa.struct([("state", pa.string()), ("seen_at", UTC_TS)])


SCHEMA = pa.schema([
    ("run_id", pa.string()), ("job", pa.string()), ("created_at", UTC_TS), ("prompt_key", pa.string()),
    ("revision", pa.int32()), ("prompt_source", pa.string()), ("prompt_row", pa.int32()),
    ("user_prompt", pa.string()), ("expand_prompt", pa.bool_()), ("image_url", pa.string()),
    ("image_end_url", pa.string()), ("loop", pa.bool_()), ("aspect_ratio", pa.string()), ("notify_hook", pa.string()),
    ("provider", pa.string()), ("task_id", pa.string()), ("status", pa.string()), ("state", pa.string()),
    ("states", pa.list_(STATE_SEEN)), ("failure_reason", pa.string()), ("error_type", pa.string()),
    ("http_status", pa.int32()), ("provider_created_at", UTC_TS), ("video_url", pa.string()),
    ("output_uri", pa.string()), ("output_bytes", pa.int64()), ("video_duration_s", pa.float64()),
    ("video_width", pa.int32()), ("video_height", pa.int32()),
    ("submitted_at", UTC_TS), ("finished_at", UTC_TS), ("stored_at", UTC_TS),
    ("submit_attempts", pa.int32()), ("submit_latency_ms", pa.int64()), ("polls", pa.int32()),
    ("download_ms", pa.int64()), ("generation_s", pa.float64()),
])


COLUMNS = SCHEMA.names


@dataclass(frozen=True)
class Generation:
    """A prompt's task as far as we know it: one table row (plus the full video URL, which is never recorded)."""

    prompt_key: str
    revision: int = 0
    run_id: str | None = None
    job: str | None = None
    created_at: datetime | None = None
    prompt_source: str | None = None
    prompt_row: int | None = None
    user_prompt: str | None = None
    expand_prompt: bool | None = None
    image_url: str | None = None
    image_end_url: str | None = None
    loop: bool | None = None
    aspect_ratio: str | None = None
    notify_hook: str | None = None
    provider: str | None = None
    task_id: str | None = None
    status: str = "new"  # new (never recorded), in_progress, completed, failed
    state: str | None = None
    states: tuple[dict, ...] = ()
    failure_reason: str | None = None
    error_type: str | None = None
    http_status: int | None = None
    provider_created_at: datetime | None = None
    video_url: str | None = None
    output_uri: str | None = None
    output_bytes: int | None = None
    video_duration_s: float | None = None
    video_width: int | None = None
    video_height: int | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    stored_at: datetime | None = None
    submit_attempts: int | None = None
    submit_latency_ms: int | None = None
    polls: int = 0
    download_ms: int | None = None
    generation_s: float | None = None
    download_url: str | None = field(default=None, repr=False)

    def row(self) -> dict:
        return {c: list(self.states) if c == "states" else getattr(self, c) for c in COLUMNS}

    @classmethod
    def from_row(cls, row: dict) -> Generation:
        values: dict[str, Any] = {c: row.get(c) for c in COLUMNS}
        values["states"] = tuple(values["states"] or ())
        values["polls"] = values["polls"] or 0
        return cls(**values)


def fresh(prompt: Prompt, provider: str, previous: Generation | None = None) -> Generation:
    """A new attempt at a prompt: its request fields and no task yet (revisions go on after `previous`)."""
    return Generation(prompt_key=prompt.key, revision=previous.revision if previous else 0,
                      prompt_source=prompt.source, prompt_row=prompt.row, provider=provider,
                      **prompt.recorded_fields())


class GenerationsTable:
    """The generations table under OUTPUT/generations/, hive-partitioned by date like the summarize ledger."""

    def __init__(self, output: GenerateOutputConfig):
        self.output = OutputConfig(url=output.table_url, storage_options=output.storage_options)

    def write(self, rows: list[dict], run_id: str) -> list[str]:
        """Store rows as one file per date partition, each whole or not at all."""
        return write_table(pa.Table.from_pylist(rows, schema=SCHEMA), self.output, run_id, label="generations")

    def merge(self, files: list[str], run_id: str) -> list[str]:
        """Rewrite a run's files as one per date partition, then delete them (a copy seen twice reads as one)."""
        if len(files) < 2:
            return files
        fs, _ = open_output(self.output)
        paths = [fs._strip_protocol(f) for f in files]
        table = pa.concat_tables([pq.read_table(p, filesystem=fs, schema=SCHEMA) for p in paths])
        merged = write_table(table, self.output, run_id, label="generations")
        fs.rm(paths)
        return merged

    def read(self) -> pa.Table | None:
        """Every row, copies left by an interrupted merge dropped (a listing a merge changed is read again)."""
        table = read_table(self.output, SCHEMA, COLUMNS, ("prompt_key", "revision", "run_id"))
        return table if table is not None and table.num_rows else None

    def latest(self, keys: Iterable[str]) -> dict[str, Generation]:
        """prompt_key -> its current record (the highest revision; the later row on a tie), for these prompts only:
        looked up in the table's store a chunk of keys at a time, never the whole table."""
        store = GenerationStore.open(self.output)
        found: dict[str, Generation] = {}
        wanted = sorted(set(keys))  # sorted: each chunk reads the few row groups its key range can be in
        for at in range(0, len(wanted), LOOKUP_CHUNK):
            rows = store.rows(wanted[at:at + LOOKUP_CHUNK]).to_pylist()
            found.update((r["prompt_key"], Generation.from_row(r)) for r in rows)
        return found


class GenerationStore(LatestStore):
    """Each prompt's current row, by prompt_key, in `OUTPUT/generations/_state/latest/` (see tasks/record/latest.py):
    a run reads the rows of its list's prompts, whatever the table holds."""

    spec = StoreSpec(SCHEMA, tuple(COLUMNS), by="prompt_key", key="prompt_key", order=("revision", "created_at"))


def read_generations(output: GenerateOutputConfig, latest: bool = True):
    """The table as a DataFrame: each prompt's current row (or every row with latest=False)."""
    import pandas as pd

    table = GenerationsTable(output).read()
    if table is None:
        return pd.DataFrame(columns=COLUMNS)
    nullable = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype(), pa.bool_(): pd.BooleanDtype()}
    df = table.to_pandas(types_mapper=nullable.get)
    if latest and len(df):
        df = df.sort_values(["revision", "created_at"]).groupby("prompt_key", sort=False).tail(1)
    return df.sort_values(["prompt_source", "prompt_row"], kind="stable").reset_index(drop=True)


class Recorder:
    """Group commit of table rows: a durable record returns once its row is stored; others go with the next write."""

    def __init__(self, table: GenerationsTable, run_id: str, flush_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.table, self.run_id, self.flush_seconds, self._clock = table, run_id, flush_seconds, clock
        self._rows: list[dict] = []
        self._waiters: list[asyncio.Future] = []
        self._lock = asyncio.Lock()
        self._last = clock()
        self.files: list[str] = []

    async def record(self, row: dict, durable: bool = False) -> None:
        self._rows.append(row)
        if durable or self._clock() - self._last >= self.flush_seconds:
            await self.flush()

    async def flush(self) -> None:
        """Store every row recorded so far; one write serves every caller waiting meanwhile."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        async with self._lock:
            if not waiter.done():
                await self._write()
        await waiter

    async def close(self) -> None:
        """Store what is left, then merge this run's files into one per date partition."""
        await self.flush()
        self.files = await asyncio.to_thread(self.table.merge, self.files, self.run_id)

    async def _write(self) -> None:
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters, self._last = [], [], self._clock()
        try:
            if rows:
                self.files += await asyncio.to_thread(self.table.write, rows, self.run_id)
        except Exception as e:  # every waiter learns the table could not be written
            for w in waiters:
                if not w.done():
                    w.set_exception(e)
            return
        for w in waiters:
            if not w.done():
                w.set_result(None)
