"""The client side of a benchmark, run in its own process: `python -m benchmarks.client '<json args>'`.

Modes: `flow` (vidbatch's summarize flow; `no_prefect` runs the same flow body with the Prefect tasks
unwrapped), `naive` (asyncio.gather + a semaphore + tenacity, inline videos) and `bare` (a bare
httpx loop posting URL-delivered items). Prints one JSON line: timings, CPU per item, RSS, outcomes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

T_START = time.time()

PAGE = os.sysconf("SC_CLK_TCK")


def status_mb(field: str) -> float:
    """VmRSS or VmHWM of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def descendants_cpu_s() -> float:
    """CPU seconds used so far by this process's live descendants (the temporary Prefect server)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(d.name))
    total, todo = 0.0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        f = stats[pid]
        total += (int(f[11]) + int(f[12])) / PAGE
        todo += children.get(pid, [])
    return total


class Marks:
    """Time, CPU and RSS at the first, the 100th and the last finished item."""

    def __init__(self, expected: int):
        self.expected, self.done = expected, 0
        self.first = self.last = None
        self.rss_100 = None
        self.curve: list[tuple[int, float]] = []

    def row(self) -> None:
        self.done += 1
        now = (time.time(), time.process_time())
        if self.done == 1:
            self.first = now
        if self.done == 100:
            self.rss_100 = status_mb("VmRSS")
        if self.done % 200 == 0:
            self.curve.append((self.done, round(status_mb("VmRSS"), 1)))
        self.last = now

    def report(self) -> dict:
        per_item = None
        if self.first and self.last and self.done > 1:
            per_item = (self.last[1] - self.first[1]) / (self.done - 1)
        return {"first_row_t": self.first and self.first[0], "last_row_t": self.last and self.last[0],
                "cpu_per_item_ms": per_item and per_item * 1000, "rss_100_mb": self.rss_100,
                "rss_end_mb": status_mb("VmRSS"), "peak_rss_mb": status_mb("VmHWM"), "rss_curve": self.curve}


def run_flow(a: dict) -> dict:
    from tasks.record.totals import set_progress

    marks = Marks(a["n"])

    class Watch:
        def update(self, totals, force: bool = False) -> None:
            while marks.done < totals.done:
                marks.row()

        def close(self, totals) -> None:
            self.update(totals)

    set_progress(Watch())
    import flows.run as loop
    import flows.summarize as mod

    imported = time.time()
    if a.get("no_prefect"):
        import logging

        from prefect import Task

        for name, obj in list(vars(loop).items()):
            if isinstance(obj, Task):
                setattr(loop, name, obj.fn)

        async def no_artifact(*args, **kwargs):
            return None

        loop.get_run_logger = lambda: logging.getLogger("summarize")
        loop.publish_summary = no_artifact
        call = mod.summarize.fn
    else:
        call = mod.summarize
    from contextlib import nullcontext

    from flows.prefect.api import prefect_api

    server_t = time.time()
    # as `vidbatch run` does: a Prefect server in a child process unless one is configured
    with nullcontext() if a.get("no_prefect") else prefect_api():
        called = time.time()
        result = asyncio.run(call(config=a["config"]))
        ended = time.time()
        server_cpu = descendants_cpu_s()  # while the temporary server still runs
    from tasks.config.load import load_config
    from tasks.record.ledger import read_ledger

    df = read_ledger(load_config(a["config"]).output)
    ok = df[df.status == "ok"]
    server_start = None if a.get("no_prefect") else called - server_t
    return {**marks.report(), "import_s": imported - a["spawned_at"], "server_start_s": server_start,
            "called_t": called, "ended_t": ended,
            "ok": int((df.status == "ok").sum()), "error": int((df.status != "ok").sum()), "rows": len(df),
            "keys": int(df.request_key.nunique()), "dup_ok": int(len(ok) - ok.request_key.nunique()),
            "attempts_mean": float(df.attempts.mean()), "attempts_max": int(df.attempts.max()),
            "error_types": dict(Counter(df.error_type.dropna())), "prefect_server_cpu_s": server_cpu,
            "result_error": result["error"]}


def payload(path: Path, url: str | None) -> dict:
    from benchmarks.common import MODEL, PROMPT

    ref = url or "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    return {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": [
        {"type": "text", "text": PROMPT}, {"type": "video_url", "video_url": {"url": ref}}]}]}


def run_naive(a: dict) -> dict:
    """asyncio.gather over every item, a semaphore, tenacity retries on 429/5xx/transport errors."""
    import httpx
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

    files = sorted(Path(a["source"]).glob("*.mp4"))[: a["n"]]
    marks, outcome, attempts = Marks(len(files)), Counter(), Counter()
    headers = {"Authorization": f"Bearer {os.environ['VB_BENCH_KEY']}"}

    async def main():
        sem = asyncio.Semaphore(a["concurrency"])
        async with httpx.AsyncClient(timeout=a.get("timeout_s", 30.0),
                                     limits=httpx.Limits(max_connections=a["concurrency"] + 4)) as http:
            async def one(path: Path):
                @retry(stop=stop_after_attempt(a.get("max_attempts", 6)), reraise=True,
                       wait=wait_exponential_jitter(initial=a.get("backoff_initial_s", 1),
                                                    max=a.get("backoff_max_s", 60)),
                       retry=retry_if_exception_type((httpx.HTTPStatusError, httpx.TransportError)))
                async def post():
                    attempts[path.name] += 1
                    r = await http.post(a["url"], json=payload(path, None),
                                        headers={**headers, "X-Request-Key": path.name})
                    r.raise_for_status()
                    return r.json()

                async with sem:
                    try:
                        await post()
                        outcome["ok"] += 1
                    except Exception as e:  # the naive loop gives up on the item
                        outcome[type(e).__name__] += 1
                marks.row()

            await asyncio.gather(*(one(p) for p in files))

    called = time.time()
    asyncio.run(main())
    return {**marks.report(), "import_s": called - a["spawned_at"], "called_t": called, "ended_t": time.time(),
            "ok": outcome.pop("ok", 0), "error": sum(outcome.values()), "rows": len(files), "keys": len(files),
            "dup_ok": 0, "attempts_mean": sum(attempts.values()) / max(1, len(files)),
            "attempts_max": max(attempts.values(), default=0), "error_types": dict(outcome)}


def run_bare(a: dict) -> dict:
    """A bare httpx loop: `concurrency` workers posting URL-delivered items, no retries, no ledger."""
    import httpx

    names = [f"v{i:05d}.mp4" for i in range(a["n"])]
    marks, outcome = Marks(len(names)), Counter()
    headers = {"Authorization": f"Bearer {os.environ['VB_BENCH_KEY']}"}

    async def main():
        queue = iter(names)
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=a["concurrency"] + 4)) as http:
            async def worker():
                for name in queue:
                    r = await http.post(a["url"], json=payload(Path(name), a["public_base_url"] + name),
                                        headers={**headers, "X-Request-Key": name})
                    outcome["ok" if r.status_code == 200 and r.json().get("choices") else str(r.status_code)] += 1
                    marks.row()

            await asyncio.gather(*(worker() for _ in range(a["concurrency"])))

    called = time.time()
    asyncio.run(main())
    return {**marks.report(), "import_s": called - a["spawned_at"], "called_t": called, "ended_t": time.time(),
            "ok": outcome.pop("ok", 0), "error": sum(outcome.values()), "rows": len(names), "keys": len(names),
            "dup_ok": 0, "error_types": dict(outcome)}


def main() -> None:
    a = json.loads(sys.argv[1])
    report = {"flow": run_flow, "naive": run_naive, "bare": run_bare}[a["mode"]](a)
    print(json.dumps({"mode": a["mode"], **report}), flush=True)


if __name__ == "__main__":
    main()
