import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tasks.config.run import OutputConfig
from tasks.record.ledger import COLUMNS, SCHEMA, ok_keys, read_ledger, to_table, write_rows


def row(key, status="ok", day=0, **kw):
    base = {"run_id": "r1", "job": "j", "created_at": datetime(2026, 11, 21, 23, 59, tzinfo=UTC)
            + timedelta(days=day), "request_key": key, "source_uri": f"s3://b/{key}.mp4", "status": status,
            "prompt_tokens": 10, "request_params": json.dumps({"temperature": 0})}
    base.update(kw)
    return base


def test_v1_columns_in_order():
    assert COLUMNS[:4] == ["run_id", "job", "created_at", "request_key"]
    assert COLUMNS[COLUMNS.index("latency_ms") + 1:] == ["source_key", "segment_count", "media_ops", "request_id",
                                                          "pack_size", "pack_index", "repairs",
                                                          "stage", *MONEY_COLUMNS]  # added after v1, at the end
    for c in ["source_etag", "segment_start_s", "estimated_prompt_tokens", "latency_ms", "http_status", "output_json"]:
        assert c in COLUMNS
    assert str(SCHEMA.field("created_at").type) == "timestamp[us, tz=UTC]"


MONEY_COLUMNS = ["estimated_frame_tokens", "estimated_audio_tokens", "estimated_timestamp_tokens",
                 "estimated_text_tokens", "estimated_output_tokens", "prompt_text_tokens", "prompt_video_tokens",
                 "prompt_audio_tokens", "cached_prompt_tokens", "reasoning_tokens", "usage_json", "currency",
                 "estimated_cost", "computed_cost", "gateway_cost", "cost"]


def test_a_ledger_written_before_the_money_columns_is_read_with_them_null(tmp_path):
    """Schema evolution: a file without the cost columns reads beside a new one; its cost columns are null."""
    out = OutputConfig(url=str(tmp_path / "ledger"))
    old = [c for c in COLUMNS if c not in MONEY_COLUMNS]
    part = tmp_path / "ledger" / "date=2026-11-21"
    part.mkdir(parents=True)
    pq.write_table(to_table([row("old")]).select(old), str(part / "part-old-1.parquet"))
    write_rows([row("new", cost=0.25, currency="XTS", prompt_video_tokens=7)], out, "r2")
    df = read_ledger(out).set_index("request_key")
    assert df.loc["new", "cost"] == 0.25 and df.loc["new", "prompt_video_tokens"] == 7
    assert pd.isna(df.loc["old", "cost"]) and pd.isna(df.loc["old", "currency"])
    assert pd.isna(df.loc["old", "prompt_video_tokens"]) and df.loc["old", "prompt_tokens"] == 10


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


def test_finished_keys_by_latest_row():
    from tasks.record.ledger import KeyState, finished_keys
    state = {k: KeyState(s, e, k, 1) for k, (s, e) in {
        "ok": ("ok", None), "s": ("error", "server"), "t": ("error", "transport"), "b": ("error", "bad_request"),
        "m": ("error", "media"), "n": ("error", "not_attempted")}.items()}
    assert finished_keys(state) == {"ok", "s", "t", "b", "m"}          # not_attempted is always picked up
    assert finished_keys(state, retry_failed=True) == {"ok", "b", "m"}  # retryable errors go again
    assert finished_keys(state, all_errors=True) == {"ok"}
    assert finished_keys(state, force=True) == set()


def test_latest_row_is_the_state(tmp_path):
    from tasks.record.ledger import latest_state
    out = OutputConfig(url=str(tmp_path / "l"))
    write_rows([row("a", "error", error_type="server")], out, "r1")
    write_rows([row("a", "ok", day=1), row("b", "ok")], out, "r2")
    write_rows([row("b", "error", day=2, error_type="bad_request")], out, "r3")
    assert {k: (v.status, v.error_type) for k, v in latest_state(out).items()} == {
        "a": ("ok", None), "b": ("error", "bad_request")}
    assert ok_keys(out) == {"a"}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_writer_flushes_every_n_rows_or_t_seconds_and_journals_each_row(tmp_path):
    from tasks.record.journal import LedgerWriter
    out = OutputConfig(url=str(tmp_path / "l"), flush_rows=3, flush_seconds=10)
    clock = Clock()
    w = LedgerWriter(out, "run1", clock=clock)
    w.add(row("a"))
    w.add(row("b"))
    assert read_ledger(out).empty and len(list((tmp_path / "l" / "_journal" / "run1").glob("*.jrnl"))) == 2
    w.add(row("c"))                                   # the third row flushes
    assert len(read_ledger(out)) == 3 and not list((tmp_path / "l" / "_journal" / "run1").glob("*.jrnl"))
    w.add(row("d"))
    clock.t = 11
    w.add(row("e"))                                   # 11 s since the last flush
    assert len(read_ledger(out)) == 5 and len(w.files) == 2
    w.close()
    assert not (tmp_path / "l" / "_journal" / "run1").exists()


def _dead_run_journal(out, run_id, rows, pid=2 ** 22 + 12345):
    """A journal as a killed run leaves it: a lease naming a process of this host that no longer exists."""
    import socket

    from tasks.record.journal import LedgerWriter
    w = LedgerWriter(out, run_id)
    for r in rows:
        w.add(r)
    lease = {"host": socket.gethostname(), "pid": pid, "updated_at": "2026-11-22T00:00:00+00:00"}
    (Path(w.journal_dir) / "lease.json").write_text(json.dumps(lease))
    return w


def test_recovery_moves_a_dead_runs_journal_into_the_ledger_once(tmp_path):
    from tasks.record.journal import recover_journal
    out = OutputConfig(url=str(tmp_path / "l"), flush_rows=100)
    _dead_run_journal(out, "dead", [row("a", run_id="dead"), row("b", run_id="dead")])
    write_rows([row("a", run_id="dead")], out, "dead")      # a flush that landed before the kill
    (tmp_path / "l" / "_journal" / "dead" / "cut.jrnl").write_bytes(b"PAR1 torn")  # torn by the kill
    assert recover_journal(out, "next") == 1                  # b; a was already in the ledger
    df = read_ledger(out)
    assert sorted(df.request_key) == ["a", "b"] and not (tmp_path / "l" / "_journal" / "dead").exists()
    assert recover_journal(out, "again") == 0


def test_live_runs_journal_is_left_alone(tmp_path):
    from tasks.record.journal import LedgerWriter, recover_journal
    out = OutputConfig(url=str(tmp_path / "l"), flush_rows=100)
    live = LedgerWriter(out, "live")                          # this process: alive
    live.add(row("a", run_id="live"))
    assert recover_journal(out, "other") == 0 and read_ledger(out).empty
    live.close()
    assert list(read_ledger(out).request_key) == ["a"]


def test_watermark_round_trip(tmp_path):
    from tasks.record.watermark import Watermark, read_watermark, watermark_since, write_watermark
    out = OutputConfig(url=str(tmp_path / "l"), watermark_overlap_s=60)
    assert read_watermark(out, "nightly") is None and watermark_since(out, "nightly") is None
    t = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    write_watermark(out, Watermark("nightly", t, "r1"))
    assert read_watermark(out, "nightly") == Watermark("nightly", t, "r1")
    assert watermark_since(out, "nightly") == t - timedelta(seconds=60)
    assert read_ledger(out).empty  # state files are not ledger rows


def test_sources_finished_only_when_every_segment_is(tmp_path):
    from tasks.record.ledger import finished_keys, finished_sources, latest_state
    out = OutputConfig(url=str(tmp_path / "l"))
    write_rows([row("v1s0", source_key="v1", segment_count=2), row("v1s1", "error", error_type="server",
                source_key="v1", segment_count=2), row("v2", source_key="v2", segment_count=1), row("old")], out, "r")
    state = latest_state(out)
    assert finished_sources(state, finished_keys(state)) == {"v1", "v2", "old"}
    assert finished_sources(state, finished_keys(state, retry_failed=True)) == {"v2", "old"}


def test_files_written_before_new_columns_read_as_null(tmp_path):
    import pyarrow.parquet as pq
    part = tmp_path / "l" / "date=2026-11-21"
    part.mkdir(parents=True)
    old = to_table([row("a")]).drop_columns(["source_key", "segment_count", "media_ops", "request_id", "pack_size",
                                             "pack_index"])
    pq.write_table(old, part / "part-old.parquet")
    out = OutputConfig(url=str(tmp_path / "l"))
    write_rows([row("b", source_key="b", segment_count=1)], out, "new")
    df = read_ledger(out)
    counts = df.set_index("request_key").segment_count
    assert sorted(df.request_key) == ["a", "b"] and pd.isna(counts["a"]) and counts["b"] == 1
