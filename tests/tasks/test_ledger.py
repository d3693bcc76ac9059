import json
import os
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow.dataset as ds
import pytest

from tasks.config import OutputConfig
from tasks.ledger import COLUMNS, SCHEMA, ok_keys, read_ledger, to_table, write_rows


def row(key, status="ok", day=0, **kw):
    base = {"run_id": "r1", "job": "j", "created_at": datetime(2026, 11, 21, 23, 59, tzinfo=timezone.utc)
            + timedelta(days=day), "request_key": key, "source_uri": f"s3://b/{key}.mp4", "status": status,
            "prompt_tokens": 10, "request_params": json.dumps({"temperature": 0})}
    base.update(kw)
    return base


def test_v1_columns_in_order():
    assert COLUMNS[:4] == ["run_id", "job", "created_at", "request_key"]
    for c in ["source_etag", "segment_start_s", "estimated_prompt_tokens", "latency_ms", "http_status", "output_json"]:
        assert c in COLUMNS
    assert str(SCHEMA.field("created_at").type) == "timestamp[us, tz=UTC]"


def test_unknown_column_is_refused():
    with pytest.raises(ValueError, match="outside the schema"):
        to_table([row("a", bogus=1)])


def test_local_hive_partitions_read_by_pyarrow_and_pandas(tmp_path):
    out = OutputConfig(url=str(tmp_path / "ledger"))
    files = write_rows([row("a"), row("b", "error", error_type="bad_request"), row("c", day=1)], out, "run1")
    assert len(files) == 2 and all("date=2026-11-2" in f for f in files)
    assert not [p for p in (tmp_path / "ledger").rglob("*") if p.name.startswith(".")]  # no temp file left
    df = read_ledger(out)
    assert sorted(df.request_key) == ["a", "b", "c"] and set(df["date"]) == {"2026-11-21", "2026-11-22"}
    pdf = pd.read_parquet(tmp_path / "ledger")
    assert len(pdf) == 3
    assert ok_keys(out) == {"a", "c"}


def test_empty_or_missing_ledger(tmp_path):
    out = OutputConfig(url=str(tmp_path / "none"))
    assert ok_keys(out) == set() and read_ledger(out).empty and write_rows([], out, "r") == []


def test_half_written_file_is_invisible_to_readers(tmp_path):
    out = OutputConfig(url=str(tmp_path / "ledger"))
    write_rows([row("a")], out, "r1")
    part = tmp_path / "ledger" / "date=2026-11-21"
    (part / ".part-r2-0000.parquet.partial").write_bytes(b"PAR1 half a file")  # a crash mid-write
    assert ok_keys(out) == {"a"} and len(read_ledger(out)) == 1
    assert len(ds.dataset(str(tmp_path / "ledger"), partitioning="hive").to_table()) == 1


def test_s3_ledger(s3):
    fs, endpoint = s3
    fs.mkdir("out")
    out = OutputConfig(url="s3://out/ledger", storage_options={"endpoint_url": endpoint})
    files = write_rows([row("a"), row("b", "error")], out, "r1")
    assert files[0].startswith("s3://out/ledger/date=2026-11-21/part-r1-")
    assert ok_keys(out) == {"a"} and len(read_ledger(out)) == 2
