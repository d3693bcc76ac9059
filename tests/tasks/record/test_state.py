"""The run-state store answers as the whole ledger would, after folds, recovery, compaction and concurrent flushes."""

import json
import random
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.config.run import OutputConfig
from tasks.record.compact import compact
from tasks.record.journal import LedgerWriter, recover_journal
from tasks.record.ledger import SCHEMA, latest_state, write_rows
from tasks.record.state import LATEST, StateStore

T0 = datetime(2026, 11, 1, tzinfo=UTC)
STATUSES = [("ok", None), ("error", "server"), ("error", "auth"), ("error", "not_attempted"), ("ok", None)]


def rows(n, start=0, run="r", rng=None, day=0):
    rng = rng or random.Random(start)
    out = []
    for i in range(start, start + n):
        status, etype = STATUSES[rng.randrange(len(STATUSES))]
        key = f"k{i % 700}"  # keys repeat: later rows supersede earlier ones
        out.append({"request_key": key, "source_key": key, "segment_count": 1, "segment_index": 0, "run_id": run,
                    "status": status,
                    "error_type": etype, "source_uri": f"s3://b/cam{i % 7}/{i % 700:05d}.mp4",
                    "created_at": T0 + timedelta(days=day, seconds=i)})
    return out


def agrees(out, uris=None, **kw):
    """The store's lookup equals the whole-ledger latest state, key by key."""
    store = StateStore.open(out, **kw)
    truth = latest_state(out)
    uris = uris or sorted({f"s3://b/cam{i % 7}/{i:05d}.mp4" for i in range(700)} | {"s3://b/never.mp4"})
    got = store.lookup(uris)
    assert got == truth
    return store


def test_lookups_equal_the_whole_ledger_across_folds(tmp_path, monkeypatch):
    import tasks.record.latest as latest

    monkeypatch.setattr(latest, "ROW_GROUP", 64)  # a key's rows straddle the fold's batches and the base's groups
    out = OutputConfig(url=str(tmp_path / "ledger"))
    assert StateStore.open(out).lookup(["s3://b/x.mp4"]) == {}  # no ledger yet
    for day in range(6):
        write_rows(rows(400, start=day * 400, run=f"r{day}", day=day), out, f"r{day}")
        store = agrees(out, fold_rows=500)
    assert store.stats.base_rows > 0 and store.stats.delta_rows <= 500
    # a lookup of a few objects reads only the row groups that can hold them
    one = store.lookup(["s3://b/cam3/00003.mp4"])
    assert set(one) == {"k3"}


def test_a_lookup_reads_only_the_groups_that_can_hold_the_listed_objects(tmp_path, monkeypatch):
    import tasks.record.latest as latest

    monkeypatch.setattr(latest, "ROW_GROUP", 100)
    out = OutputConfig(url=str(tmp_path / "ledger"))
    write_rows(rows(700), out, "r")
    store = StateStore.open(out, fold_rows=0)
    assert store.stats.base_groups == 7 and store.stats.delta_rows == 0
    store.lookup(["s3://b/cam0/00000.mp4", "s3://b/cam0/00007.mp4"])
    assert store.stats.groups_read == 1
    store.lookup(["s3://b/cam9/new.mp4"])  # sorts after every uri: at most the last group
    assert store.stats.groups_read <= 2


def test_right_after_journal_recovery_and_compaction(tmp_path):
    out = OutputConfig(url=str(tmp_path / "ledger"), flush_rows=10_000, flush_seconds=3600)
    write_rows(rows(700), out, "r0")
    StateStore.open(out, fold_rows=0)  # everything in the base
    writer = LedgerWriter(out, "dead-run")
    for r in rows(50, start=10_000, run="dead-run", day=3):
        writer.add(r)  # journaled, never flushed: the run dies here (its lease names a process that is gone)
    lease = next((tmp_path / "ledger").glob("_journal/dead-run/lease.json"))
    lease.write_text(json.dumps({**json.loads(lease.read_text()), "pid": 2**22 + 12345}))
    assert recover_journal(out, "next-run") == 50
    agrees(out, fold_rows=10**9)
    for day in range(3):
        write_rows(rows(100, start=20_000 + day * 100, day=day + 4), out, f"x{day}")
        write_rows(rows(100, start=30_000 + day * 100, day=day + 4), out, f"y{day}")
    assert compact(out).partitions  # rewrites the partitions under new names, then refolds the state
    store = agrees(out, fold_rows=10**9)
    assert store.stats.delta_files == 0


def test_concurrent_flushes_and_folds_never_lose_a_row(tmp_path):
    out = OutputConfig(url=str(tmp_path / "ledger"))
    write_rows(rows(700), out, "r0")
    errors = []

    def writer(n):
        try:
            for b in range(8):
                write_rows(rows(60, start=100_000 * n + b * 60, run=f"w{n}", day=5 + b), out, f"w{n}")
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    def folder():
        try:
            for _ in range(6):
                StateStore.open(out, fold_rows=0)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)] + [threading.Thread(target=folder)] * 1
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    agrees(out, fold_rows=10**9)
    assert len(list((tmp_path / "ledger" / LATEST).glob("*.json"))) <= 2 + 1
    assert not list((tmp_path / "ledger").glob("**/*.parquet")) or all(  # a DuckDB glob of the ledger reads rows only
        p.parent.name.startswith("date=") for p in (tmp_path / "ledger").glob("**/*.parquet"))


def test_a_ledger_written_by_the_previous_version_is_picked_up(tmp_path):
    """v1 files lack source_key and segment_count: the state reads them as the key itself and one segment."""
    out = OutputConfig(url=str(tmp_path / "ledger"))
    v1 = pa.schema([f for f in SCHEMA if f.name not in ("source_key", "segment_count", "media_ops", "request_id",
                                                           "pack_size", "pack_index", "repairs", "stage")])
    part = tmp_path / "ledger" / "date=2026-11-01"
    part.mkdir(parents=True)
    old = [{k: v for k, v in r.items() if k in v1.names} for r in rows(300)]
    pq.write_table(pa.Table.from_pylist(old, schema=v1), part / "part-old-1.parquet")
    store = agrees(out, fold_rows=10**9)
    assert store.stats.delta_rows == 300
    store = agrees(out, fold_rows=0)  # migrated: folded once into a base, atomically (a manifest written last)
    assert store.stats.folded and store.stats.delta_rows == 0
    got = store.lookup(["s3://b/cam1/00001.mp4"])
    assert got["k1"].source_key == "k1" and got["k1"].segment_count == 1


def test_a_base_of_the_previous_version_is_read_by_a_run_and_rebuilt_for_the_index(tmp_path):
    """Bases written before the index read its lookups from the store have no segment_index or stage: a run's
    lookups read them as they are (no rebuild on the night of an upgrade), the index rebuilds the store once."""
    from tasks.record.state import LEDGER_STATE, IndexStateStore

    class OldStore(StateStore):
        spec = replace(LEDGER_STATE, columns=tuple(c for c in LEDGER_STATE.columns
                                                   if c not in ("segment_index", "stage")))

    out = OutputConfig(url=str(tmp_path / "ledger"))
    write_rows(rows(700), out, "r0")
    OldStore.open(out, fold_rows=0)
    write_rows(rows(100, start=5_000, run="r1", day=1), out, "r1")
    store = agrees(out, fold_rows=10**9)  # the old base and the new file's delta
    assert (store.stats.base_rows, store.stats.delta_rows) == (700, 100)
    assert store.rows(["s3://b/cam0/00000.mp4"])["stage"].null_count == 1
    index = IndexStateStore.open(out, fold_rows=10**9)
    assert index.stats.base_rows == 0 and index.stats.delta_rows == 800  # passed over: the ledger is the delta
    assert index.lookup(["s3://b/cam1/00001.mp4"]) == store.lookup(["s3://b/cam1/00001.mp4"])
    store.fold()  # a run's next fold rebuilds it from the ledger (its missing columns were unknown, not null)
    index = IndexStateStore.open(out, fold_rows=10**9)
    assert index.stats.base_rows == len(latest_state(out)) and index.stats.delta_rows == 0
    assert index.rows(["s3://b/cam0/00000.mp4"])["segment_index"].to_pylist() == [0]
    assert agrees(out, fold_rows=10**9).stats.delta_rows == 0


def test_journal_recovery_reads_only_the_partitions_of_the_journaled_rows(tmp_path, monkeypatch):
    out = OutputConfig(url=str(tmp_path / "ledger"), flush_rows=10_000, flush_seconds=3600)
    for day in range(10):
        write_rows(rows(50, start=day * 50, day=day), out, f"r{day}")
    writer = LedgerWriter(out, "dead-run")
    journaled = rows(5, start=100, day=2)  # already flushed by the run itself (the same rows), then it died
    write_rows(journaled, out, "dead-run")
    for r in journaled + rows(3, start=9_000, day=10):
        writer.add(r)
    lease = next((tmp_path / "ledger").glob("_journal/dead-run/lease.json"))
    lease.write_text(json.dumps({**json.loads(lease.read_text()), "pid": 2**22 + 12345}))
    listed: list[str] = []
    real = type(writer.fs).ls
    monkeypatch.setattr(type(writer.fs), "ls", lambda fs, path, *a, **kw: listed.append(path) or real(fs, path, *a,
                                                                                                       **kw))
    assert recover_journal(out, "next-run") == 3  # the flushed copies are not written twice
    dates = {p.rsplit("date=", 1)[1] for p in listed if "date=" in p}
    assert dates == {"2026-11-03", "2026-11-11"}  # of the ledger's 10 partitions, only the one its rows can be in
    agrees(out, fold_rows=10**9)


def test_stores_on_an_object_store_fold_through_pyarrow_datasets(s3, tmp_path):
    """Off a local disk the fold streams pyarrow datasets into DuckDB: the ledger's state and the generations
    table (whose rows hold a list of structs) read back as the whole table would."""
    from tasks.generate.table import GenerationsTable, GenerationStore
    from tests.tasks.generate.test_generator import ROWS, config, history, write_list

    fs, endpoint = s3
    fs.mkdir("out")
    out = OutputConfig(url="s3://out/ledger", storage_options={"endpoint_url": endpoint})
    write_rows(rows(700), out, "r")
    assert agrees(out, fold_rows=0).stats.folded
    cfg = config(tmp_path, write_list(tmp_path, ROWS[:1]),
                 output={"url": "s3://out/gen", "storage_options": {"endpoint_url": endpoint}})
    table = GenerationsTable(cfg.output)
    history(table, 50)
    assert GenerationStore.open(table.output, fold_rows=0).stats.base_rows == 50
    got = table.latest(f"{p:06x}" for p in range(50))
    assert {g.revision for g in got.values()} == {3} and len(got) == 50
    assert [s["state"] for s in got["000001"].states] == ["pending", "dreaming", "completed"]
