"""Index scale: the index flow's start-up (what is missing, looked up for the night's videos) against a large index.

Run: .venv/bin/python benchmarks/index_scale.py [--rows 1000000] [--cameras 100] [--days 300] [--work DIR]

It builds, once (kept in --work between runs, beside benchmarks/archive_scale.py's tree, which it shares):
- an index output: a ledger of --rows rows (archive_scale's ledger: past nights, every video answered) and an
  entries table of as many rows (each past video's `video` entry), both in their own schemas;
- tonight's answers: the night's 1,000 new clips, two segments each, answered and in the ledger, no entries yet.

Each measurement runs in a fresh child process (imports included) and reports the time from start to the first
batch of videos ready to index (both stores opened, the night's URIs looked up, the first batch's rows read from
their partitions), the whole night's lookups, peak RSS (ru_maxrss), and the row groups read. The first open of
each store (the fold that builds its base) is timed apart. The baseline is the previous version: the whole
ledger's state columns and the whole entries table read into Python objects.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T_START = time.perf_counter()

from benchmarks.archive_scale import NIGHT, make_ledger, make_tree, rss_mb  # noqa: E402 - after the path is set

NIGHT_VIDEOS = 1000


def night_uris(tree: Path, cameras: int) -> list[str]:
    return [f"file://{tree}/cam{n % cameras:03d}/{NIGHT:%Y/%m/%d}/new-{n}.mp4" for n in range(NIGHT_VIDEOS)]


def make_index(out: Path, rows: int, tree: Path, cameras: int) -> None:
    """The ledger (archive_scale's), an entry per past video, and tonight's answered segments."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from tasks.index.entries import ENTRY_SCHEMA
    from tasks.record.ledger import SCHEMA

    make_ledger(out / "ledger", rows, cameras, 365, f"file://{tree}")
    if (out / "index" / "_done").exists():
        return
    for part in sorted((out / "ledger").glob("date=*")):  # a `video` entry for every past video, written that day
        t = ds.dataset(part, format="parquet", schema=SCHEMA).to_table(
            columns=["request_key", "source_uri", "source_key", "created_at"])
        n = t.num_rows
        entries = pa.table({f.name: t[f.name] if f.name in ("request_key", "source_uri", "source_key", "created_at")
                            else pa.nulls(n, f.type) for f in ENTRY_SCHEMA}, schema=ENTRY_SCHEMA)
        entries = entries.set_column(ENTRY_SCHEMA.get_field_index("entry_id"), "entry_id",
                                     pc.binary_join_element_wise(t["source_key"], pa.scalar("-video"), ""))
        entries = entries.set_column(ENTRY_SCHEMA.get_field_index("kind"), "kind", pa.repeat(pa.scalar("video"), n))
        (out / "index" / part.name).mkdir(parents=True, exist_ok=True)
        pq.write_table(entries, out / "index" / part.name / "entries-past.parquet", compression="zstd")
    night = []
    for n, uri in enumerate(night_uris(tree, cameras)):
        for i in range(2):
            night.append({"request_key": f"night-{n}-s{i}", "source_key": f"night-{n}", "source_uri": uri,
                          "segment_index": i, "segment_count": 2, "status": "ok", "run_id": "tonight",
                          "job": "nightly", "created_at": NIGHT + timedelta(hours=1, seconds=n), "output_text": "{}"})
    part = out / "ledger" / f"date={NIGHT:%Y-%m-%d}"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(night, schema=SCHEMA), part / "part-tonight.parquet", compression="zstd")
    (out / "index" / "_done").write_text("ok")


def indexer(out: str):
    from tasks.config.load import PROJECT_ROOT, load_index_config
    from tasks.index.indexer import Indexer

    cfg = load_index_config(PROJECT_ROOT / "configs" / "lectures.yaml")
    return Indexer(cfg.model_copy(update={"output": cfg.output.model_copy(update={"url": out})}))


def child_new(out: str, tree: str, cameras: int) -> dict:
    """The new start-up: both stores opened, the night's URIs looked up a chunk at a time, the first batch loaded."""
    from tasks.record.latest import LOOKUP_CHUNK

    ix = indexer(out)
    t = time.perf_counter()
    ledger, entries = ix.stores()
    opened = time.perf_counter() - t
    uris = night_uris(Path(tree), cameras)
    first, todos = None, 0
    for at in range(0, len(uris), LOOKUP_CHUNK):
        found = ix.todo(uris[at:at + LOOKUP_CHUNK], ledger, entries, set())
        todos += len(found)
        if first is None and found:
            ix.load(found[:ix.config.output.batch_size])
            first = time.perf_counter() - T_START
    return {"first_batch_s": first, "night_s": time.perf_counter() - T_START, "open_s": opened, "todos": todos,
            "rss_mb": rss_mb(), "ledger_groups": f"{ledger.stats.groups_read} of {ledger.stats.base_groups}",
            "entry_groups": f"{entries.stats.groups_read} of {entries.stats.base_groups}",
            "delta_rows": ledger.stats.delta_rows + entries.stats.delta_rows}


def child_old(out: str) -> dict:
    """The previous version's start-up: the whole ledger's state columns and the whole entries table, in Python."""
    from tasks.index.entries import read_entries
    from tasks.record.ledger import read_rows

    ix = indexer(out)
    table = read_rows(ix.ledger, ["request_key", "created_at", "status", "source_key", "segment_count",
                                  "segment_index", "stage"])
    latest: dict = {}
    for r in sorted(table.to_pylist() if table is not None else [], key=lambda r: r["created_at"]):
        latest[r["request_key"]] = r
    marks = read_entries(ix.entries_output, ["source_key", "stage", "request_key", "kind"])
    marked = set(marks["source_key"].to_pylist()) if marks is not None else set()
    return {"first_batch_s": time.perf_counter() - T_START, "keys": len(latest), "marked": len(marked),
            "rss_mb": rss_mb()}


def child_fold(out: str) -> dict:
    from tasks.index.entries import EntryStore
    from tasks.record.state import StateStore

    ix = indexer(out)
    t = time.perf_counter()
    ledger, entries = StateStore.open(ix.ledger, fold_rows=0), EntryStore.open(ix.entries_output, fold_rows=0)
    return {"fold_s": time.perf_counter() - t, "rows": ledger.stats.base_rows + entries.stats.base_rows,
            "rss_mb": rss_mb()}


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cameras", type=int, default=100)
    ap.add_argument("--days", type=int, default=300)
    ap.add_argument("--work", default="/tmp/vidbatch-archive-bench")
    ap.add_argument("--no-baseline", action="store_true", help="skip the old whole-table start-up")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        print(json.dumps({"new": lambda: child_new(rest[0], rest[1], int(rest[2])), "old": lambda: child_old(rest[0]),
                          "fold": lambda: child_fold(rest[0])}[kind]()))
        return
    work = Path(a.work)
    tree = work / f"tree-{a.cameras}x{a.days}"
    make_tree(tree, a.cameras, a.days)
    out = work / f"index-{a.rows}-{a.cameras}x{a.days}"
    t = time.perf_counter()
    make_index(out, a.rows, tree, a.cameras)
    print(f"index output of {a.rows:,} ledger rows and {a.rows:,} entries: {out} "
          f"(built in {time.perf_counter() - t:.0f} s); tonight: {NIGHT_VIDEOS} videos answered, not indexed")
    for store in (out / "ledger" / "_state", out / "index" / "_state"):
        if store.exists():
            import shutil

            shutil.rmtree(store)
    fold = run_child("fold", str(out))
    print(f"  first open (migration: both stores folded into bases): {fold['fold_s']:.1f} s, peak RSS "
          f"{fold['rss_mb']:.0f} MB, {fold['rows']:,} rows")
    new = run_child("new", str(out), str(tree), str(a.cameras))
    print(f"  index start-up: first batch to index after {new['first_batch_s']:.2f} s (stores open "
          f"{new['open_s']:.2f} s), whole night's lookups {new['night_s']:.2f} s, peak RSS {new['rss_mb']:.0f} MB, "
          f"{new['todos']} videos to index; row groups read: ledger {new['ledger_groups']}, entries "
          f"{new['entry_groups']}")
    if not a.no_baseline and a.rows <= 2_000_000:
        old = run_child("old", str(out))
        print(f"  baseline (previous version, both tables whole in Python): {old['first_batch_s']:.2f} s, peak RSS "
              f"{old['rss_mb']:.0f} MB")


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
