"""Archive scale: a night's start-up cost against the ledger's size and the tree's, with the old way as baseline.

Run: .venv/bin/python benchmarks/archive_scale.py [--rows 1000000 10000000] [--cameras 100] [--days 300]
                                                  [--moto-cameras 20] [--moto-days 30] [--work DIR]

It builds, once (kept in --work between runs):
- ledgers of each --rows size in the ledger's own schema, written fast with pyarrow: one file per day
  partition, keys as random sha256-like hex, source URIs laid out camNN/YYYY/MM/DD/clip-N.mp4;
- a local dated tree of cameras x days leaf directories (100 x 300: 30,000 leaves, 30,400 directories
  in all), one old clip per leaf, and a night of 1,000 new clips in the last day;
- a moto S3 server (its own process) with a smaller dated tree, for real request counts (ListObjectsV2
  counted at the botocore client).

Each measurement runs in a fresh child process (imports included) and reports: time from start to the first
batch ready to plan and send (the state store opened, the night's directories listed, the state of the first
batch looked up), time to finish the whole night's listing and lookups, peak RSS (ru_maxrss), listing calls.
The baseline is the previous version's start-up: the whole ledger read into a dict (`latest_state`).
The first open of a ledger that has no state store yet folds it (the migration): timed and measured apart.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T_START = time.perf_counter()
NIGHT = datetime(2026, 12, 1, tzinfo=UTC)
LAYOUT = "{camera}/{date:%Y/%m/%d}/"


def make_ledger(path: Path, rows: int, cameras: int, days: int, uri_base: str) -> None:
    """Rows of past nights for the tree's own cameras and day directories (URIs as the listing names them)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tasks.record.ledger import SCHEMA

    if (path / "_done").exists():
        return
    rng = np.random.default_rng(rows)
    per_day = rows // days
    first = NIGHT - timedelta(days=days)
    for d in range(days):
        day = first + timedelta(days=d)
        n = per_day + (rows - per_day * days if d == days - 1 else 0)
        hexes = np.array([f"{i:02x}" for i in range(256)], dtype="S2")
        keys = hexes[np.frombuffer(rng.bytes(32 * n), np.uint8).reshape(n, 32)].view("S64").ravel()
        hexkeys = pa.array(keys).cast(pa.string())
        cam = pc.utf8_lpad(pa.array(np.arange(n) % cameras).cast(pa.string()), 3, "0")
        clip = pa.array(np.arange(n) // cameras).cast(pa.string())
        uris = pc.binary_join_element_wise(f"{uri_base}/cam", cam, f"/{day:%Y/%m/%d}/clip-", clip, ".mp4", "")
        micros = np.datetime64(day.replace(tzinfo=None), "us") + \
            (np.linspace(0, 86_000, n) * 1e6).astype("timedelta64[us]")
        at = pa.array(micros).cast(pa.timestamp("us", tz="UTC"))
        t = pa.table({"run_id": pa.repeat(pa.scalar(f"night-{d}"), n), "job": pa.repeat(pa.scalar("nightly"), n),
                      "created_at": at, "request_key": pa.array(hexkeys), "source_uri": pa.array(uris),
                      "source_key": pa.array(hexkeys), "status": pa.repeat(pa.scalar("ok"), n),
                      "segment_count": pa.repeat(pa.scalar(1, pa.int32()), n),
                      "prompt_tokens": pa.repeat(pa.scalar(5000, pa.int64()), n),
                      "output_text": pa.repeat(pa.scalar("a person walks past the door"), n)})
        full = pa.table({f.name: t[f.name] if f.name in t.column_names else pa.nulls(n, f.type) for f in SCHEMA},
                        schema=SCHEMA)
        part = path / f"date={day:%Y-%m-%d}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(full, part / f"part-night-{d}.parquet", compression="zstd")
    (path / "_done").write_text("ok")


def make_tree(path: Path, cameras: int, days: int, night_objects: int = 1000) -> None:
    if (path / ".done").exists():
        return
    first = NIGHT - timedelta(days=days - 1)
    for c in range(cameras):
        for d in range(days):
            day = first + timedelta(days=d)
            leaf = path / f"cam{c:03d}" / f"{day:%Y/%m/%d}"
            leaf.mkdir(parents=True, exist_ok=True)
            f = leaf / "old.mp4"
            f.write_bytes(b"v")
            t = (day + timedelta(hours=3)).timestamp()
            os.utime(f, (t, t))
    for n in range(night_objects):
        leaf = path / f"cam{n % cameras:03d}" / f"{NIGHT:%Y/%m/%d}"
        f = leaf / f"new-{n}.mp4"
        f.write_bytes(b"v")
        t = (NIGHT + timedelta(hours=1, seconds=n)).timestamp()
        os.utime(f, (t, t))
    (path / ".done").write_text("ok")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_new(ledger: str, src: str, storage: dict, since: str, layout: str | None) -> dict:
    """The new start-up: open the state store, list the night, look up its objects a batch at a time."""
    from tasks.config.run import OutputConfig, SourceConfig
    from tasks.discover.listing import DiscoverStats, iter_objects, open_source
    from tasks.plan.batches import pending_batches
    from tasks.record.state import RunState, StateStore
    from tasks.record.totals import RunTotals

    class Cfg:  # the two settings pending_batches reads, without a provider profile
        class output:  # noqa: N801 - stands in for the config section
            batch_size = 200

        class media:  # noqa: N801 - stands in for the config section
            class pack:  # noqa: N801 - stands in for the config section
                max_videos = 1

    source = SourceConfig(url=src, storage_options=storage, layout=layout)
    fs, root = open_source(source)
    found, totals = DiscoverStats(), RunTotals()
    t_open = time.perf_counter()
    store = StateStore.open(OutputConfig(url=ledger))
    opened = time.perf_counter() - t_open

    state = RunState(store)
    objs = iter_objects(fs, root, source, datetime.fromisoformat(since), None, found)
    first = None
    sent = 0
    import tasks.plan.batches as pb

    # the benchmark's ledger keys are random: no listed object is finished, as on a new night
    pb.request_key = lambda obj, cfg: obj.uri  # noqa: ARG005 - a key without a provider profile
    for batch in pending_batches(objs, Cfg, state.finished, totals):  # type: ignore[arg-type]
        first = first or time.perf_counter() - T_START
        sent += len(batch)
    return {"first_batch_s": first, "night_s": time.perf_counter() - T_START, "open_s": opened,
            "objects": sent, "listed": found.listed, "list_calls": found.list_calls, "rss_mb": rss_mb(),
            "groups_read": store.stats.groups_read, "base_groups": store.stats.base_groups,
            "folded": store.stats.folded, "delta_rows": store.stats.delta_rows}


def child_old(ledger: str) -> dict:
    """The previous version's start-up: every row's state in a dict."""
    from tasks.config.run import OutputConfig
    from tasks.record.ledger import latest_state

    n = len(latest_state(OutputConfig(url=ledger)))
    return {"first_batch_s": time.perf_counter() - T_START, "keys": n, "rss_mb": rss_mb()}


def child_fold(ledger: str) -> dict:
    from tasks.config.run import OutputConfig
    from tasks.record.state import StateStore

    t = time.perf_counter()
    store = StateStore.open(OutputConfig(url=ledger), fold_rows=0)
    return {"fold_s": time.perf_counter() - t, "base_rows": store.stats.base_rows, "rss_mb": rss_mb()}


def run_child(*args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def moto_tree(cameras: int, days: int) -> tuple[str, subprocess.Popen]:
    port = 5000 + os.getpid() % 1000
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import s3fs

    for _ in range(100):
        try:
            fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="k", secret="s", skip_instance_cache=True)
            fs.mkdir("archive")
            break
        except Exception:  # noqa: BLE001 - the server is still starting
            time.sleep(0.2)
    first = NIGHT - timedelta(days=days - 1)
    data = {f"archive/cam{c:03d}/{first + timedelta(days=d):%Y/%m/%d}/old.mp4": b"v"
            for c in range(cameras) for d in range(days)}
    data |= {f"archive/cam{n % cameras:03d}/{NIGHT:%Y/%m/%d}/new-{n}.mp4": b"v" for n in range(1000)}
    fs.pipe(data)
    return endpoint, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--cameras", type=int, default=100)
    ap.add_argument("--days", type=int, default=300)
    ap.add_argument("--moto-cameras", type=int, default=20)
    ap.add_argument("--moto-days", type=int, default=30)
    ap.add_argument("--work", default="/tmp/vidbatch-archive-bench")
    ap.add_argument("--no-baseline", action="store_true", help="skip the old whole-ledger start-up")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        result = {"new": lambda: child_new(rest[0], rest[1], json.loads(rest[2]), rest[3], rest[4] or None),
                  "old": lambda: child_old(rest[0]), "fold": lambda: child_fold(rest[0])}[kind]()
        print(json.dumps(result))
        return
    work = Path(a.work)
    tree = work / f"tree-{a.cameras}x{a.days}"
    t = time.perf_counter()
    make_tree(tree, a.cameras, a.days)
    leaves = a.cameras * a.days
    print(f"tree: {tree} ({leaves} leaf directories, {leaves + a.cameras * (1 + a.days // 28 + 2) } or so in all; "
          f"built in {time.perf_counter() - t:.0f} s)")
    since = (NIGHT - timedelta(hours=0)).isoformat()
    from tasks.config.layout import parse_layout
    from tasks.discover.walk import layout_window

    span = layout_window(datetime.fromisoformat(since), None, 1)
    days_named = len(parse_layout(LAYOUT).date_values(*span))  # the lag day, the window's days, one day of skew
    window_dirs = a.cameras * days_named
    results = {}
    for rows in a.rows:
        ledger = work / f"ledger-{rows}-{a.cameras}x{a.days}"
        t = time.perf_counter()
        make_ledger(ledger, rows, a.cameras, 365, f"file://{tree}")
        print(f"\nledger of {rows:,} rows: {ledger} (built in {time.perf_counter() - t:.0f} s)")
        state = ledger / "_state"
        if state.exists():
            import shutil

            shutil.rmtree(state)
        fold = run_child("fold", str(ledger))
        print(f"  first open (migration: fold into a base): {fold['fold_s']:.1f} s, peak RSS {fold['rss_mb']:.0f} MB, "
              f"{fold['base_rows']:,} keys")
        new = run_child("new", str(ledger), str(tree), "{}", since, LAYOUT)
        results[rows] = new
        print(f"  nightly start-up, layout: first batch after {new['first_batch_s']:.2f} s (state open "
              f"{new['open_s']:.2f} s), whole night {new['night_s']:.2f} s, peak RSS {new['rss_mb']:.0f} MB, "
              f"{new['objects']} new objects, {new['list_calls']} listing calls (the window names {days_named} days x "
              f"{a.cameras} cameras = {window_dirs} dirs; + depth 4 = {window_dirs + 4}), "
              f"{new['groups_read']} of {new['base_groups']} row groups read")
        plain = run_child("new", str(ledger), str(tree), "{}", since, "")
        print(f"  nightly start-up, no layout (local walk of the whole tree): first batch after "
              f"{plain['first_batch_s']:.2f} s, whole night {plain['night_s']:.2f} s, {plain['list_calls']} listing "
              f"calls, peak RSS {plain['rss_mb']:.0f} MB")
        if not a.no_baseline and rows <= 2_000_000:
            old = run_child("old", str(ledger))
            print(f"  baseline (previous version, whole ledger in a dict): {old['first_batch_s']:.2f} s, "
                  f"peak RSS {old['rss_mb']:.0f} MB")
    if len(a.rows) >= 2:
        lo, hi = a.rows[0], a.rows[-1]
        print(f"\nstart-up {hi:,} / {lo:,} rows: {results[hi]['first_batch_s'] / results[lo]['first_batch_s']:.2f} "
              f"(target <= 1.5); at {hi:,}: {results[hi]['first_batch_s']:.2f} s (target <= 10 s), "
              f"{results[hi]['rss_mb']:.0f} MB (target <= 400 MB)")
    endpoint, proc = moto_tree(a.moto_cameras, a.moto_days)
    try:
        ledger = work / f"ledger-{a.rows[0]}-{a.cameras}x{a.days}"
        opts = json.dumps({"endpoint_url": endpoint, "key": "k", "secret": "s"})
        env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
        objects = a.moto_cameras * a.moto_days + 1000
        # moto stamps every object with the time it was written: a window from yesterday holds them all
        moto_since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        lay = run_child("new", str(ledger), "s3://archive/", opts, moto_since, LAYOUT, env=env)
        flat = run_child("new", str(ledger), "s3://archive/", opts, moto_since, "", env=env)
        print(f"\nmoto S3, {a.moto_cameras} cameras x {a.moto_days} days ({objects} objects):")
        print(f"  with the layout, window from {moto_since[:16]} (by moto's clock; the tree's dates end "
              f"{NIGHT:%Y-%m-%d}): {lay['list_calls']} ListObjectsV2 calls, {lay['listed']} objects listed")
        print(f"  without a layout (flat): {flat['list_calls']} calls for {flat['listed']} objects "
              f"(target <= ceil(objects / 1000) + 1 = {-(-flat['listed'] // 1000) + 1})")
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
