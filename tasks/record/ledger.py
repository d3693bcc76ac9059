"""The Parquet ledger's schema and rules: one row per finished item, the latest row per request_key is its state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from tasks.config.run import OutputConfig
from tasks.errors import RERUN_KINDS
from tasks.record.tables import UTC_TS, dataset, read_table, write_table
from tasks.secrets import scrub

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
    # money (tasks/record/cost.py): the estimate by modality, the usage the provider reported, the cost
    ("estimated_frame_tokens", pa.int64()), ("estimated_audio_tokens", pa.int64()),
    ("estimated_timestamp_tokens", pa.int64()), ("estimated_text_tokens", pa.int64()),
    ("estimated_output_tokens", pa.int64()),
    ("prompt_text_tokens", pa.int64()), ("prompt_video_tokens", pa.int64()), ("prompt_audio_tokens", pa.int64()),
    ("cached_prompt_tokens", pa.int64()), ("reasoning_tokens", pa.int64()),
    ("usage_json", pa.string()),       # the answer's usage object as sent
    ("currency", pa.string()),         # of the cost columns (the profile's prices)
    ("estimated_cost", pa.float64()),  # the estimate (prompt by the token rules, expected output) at the prices
    ("computed_cost", pa.float64()),   # the reported usage at the prices
    ("gateway_cost", pa.float64()),    # the gateway's own usage.cost, when it sends one
    ("cost", pa.float64()),            # gateway_cost when sent, else computed_cost; null without prices
])


COLUMNS = SCHEMA.names


ROW_IDENTITY = ("request_key", "run_id", "created_at")  # one finished attempt at one key


RETRYABLE_ERRORS = {"retryable", "rate_limited", "server", "transport", "malformed_response"}


ALWAYS_RETRIED = RERUN_KINDS  # not_attempted, budget, auth, quota_exhausted: the run stopped; the next one sends them


def ledger_dataset(output: OutputConfig) -> ds.Dataset | None:
    """The ledger as one pyarrow dataset, or None when nothing was written yet."""
    return dataset(output, SCHEMA)


def read_rows(output: OutputConfig, columns: list[str] | None = None) -> pa.Table | None:
    """The ledger's rows, identical copies dropped (a compaction's old and new files seen together)."""
    return read_table(output, SCHEMA, columns, ROW_IDENTITY)


def to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows as a table of the ledger schema; unknown keys are an error, missing ones are null."""
    rows = list(rows)
    for r in rows:
        extra = set(r) - set(COLUMNS)
        if extra:
            raise ValueError(f"ledger row has columns outside the schema: {sorted(extra)}")
    return pa.Table.from_pylist([{c: scrub(r.get(c)) for c in COLUMNS} for r in rows], schema=SCHEMA)


def write_rows(rows: list[dict], output: OutputConfig, run_id: str) -> list[str]:
    """Write rows straight to the ledger (no journal)."""
    return write_table(to_table(rows), output, run_id)


def read_ledger(output: OutputConfig) -> pd.DataFrame:
    """The whole ledger as a DataFrame (for reports and tests; large ledgers want DuckDB or a filter)."""
    table = read_rows(output)
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
    table = read_rows(output, ["request_key", "created_at", "status", "error_type", "source_key", "segment_count"])
    if table is None:
        return {}
    t = table.take(pc.sort_indices(table, [("created_at", "ascending")]))
    return {k: KeyState(s, e, src or k, n or 1) for k, s, e, src, n in zip(
        *(t[c].to_pylist() for c in ("request_key", "status", "error_type", "source_key", "segment_count")),
        strict=True)}


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
