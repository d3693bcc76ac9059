"""Shared parts of the benchmarks: sample buckets, run configs, localapi, the client child process, the figures.

Each benchmark serves localapi from its own process and runs every client (vidbatch's flow, the naive
baseline, a bare loop) in a child process (benchmarks/client.py), so the client's memory and CPU are
measured without the server's.
"""

from __future__ import annotations

import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from localapi import LocalAPI, LocalAPIConfig  # noqa: E402 - after sys.path setup
from localapi.samples import SampleSpec, sample_bytes  # noqa: E402 - after sys.path setup

API_KEY = "bench-key-not-a-secret"
MODEL = "google/gemini-2.5-flash"
PROMPT = "Summarize this clip in one sentence."
TINY = SampleSpec(seconds=2, scene_seconds=1, width=64, height=48, fps=4, audio=False)


def make_bucket(folder: Path, n: int, specs: list[SampleSpec] = (TINY,)) -> list[Path]:
    """n small videos (the specs in turn) as files v00000.mp4 … in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs = [sample_bytes("mp4", s) for s in specs]
    paths = []
    for i in range(n):
        p = folder / f"v{i:05d}.mp4"
        p.write_bytes(blobs[i % len(blobs)])
        paths.append(p)
    return paths


def write_config(path: Path, source: Path, base_url: str, ledger: Path, limits: dict, batch_size: int = 200,
                 **provider) -> Path:
    """A run config for the summarize flow: a local folder, localapi in the openai dialect, a local ledger."""
    p = {"name": "localapi-bench", "dialect": "openai", "base_url": base_url, "model": MODEL,
         "api_key_env": "VB_BENCH_KEY", "delivery": "inline", "limits": limits, **provider}
    cfg = {"job": "bench", "source": {"url": str(source)}, "provider": p,
           "prompt": {"system": "", "user": PROMPT, "params": {"max_tokens": 200}},
           "output": {"url": str(ledger), "batch_size": batch_size}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_api(**settings) -> LocalAPI:
    return LocalAPI(LocalAPIConfig(api_key=API_KEY, **settings)).start()


def run_client(args: dict, prefect_home: Path | None = None, timeout: float = 3600) -> dict:
    """Run benchmarks/client.py in a fresh process; its JSON report."""
    env = {**os.environ, "VB_BENCH_KEY": API_KEY, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    if prefect_home:
        env["PREFECT_HOME"] = str(prefect_home)
    args = {**args, "spawned_at": time.time()}
    done = subprocess.run([sys.executable, "-m", "benchmarks.client", json.dumps(args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"client {args['mode']} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def settle(api: LocalAPI, timeout: float = 120.0) -> None:
    """Wait until localapi has no request in flight (a stalled answer the client gave up on still counts)."""
    deadline = time.monotonic() + timeout
    while api.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.2)


def scratch(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"vidbatch-bench-{name}-"))


# -- figures ------------------------------------------------------------------------------------------

def responses(stats: dict) -> tuple[int, int]:
    """(answers including dropped connections, 429 answers) localapi gave."""
    by = stats["by_status"]
    return sum(by.values()) + stats["dropped"], by.get("429", 0)


def steady_rate(times: list[float], skip: int) -> float:
    """Admissions per second after the first `skip` (the first window's allowance), to the last one."""
    times = sorted(times)
    if len(times) < skip + 2:
        return float("nan")
    return (len(times) - 1 - skip) / (times[-1] - times[skip])


def middle_rate(times: list[float], share: float = 0.1) -> float:
    """Admissions per second between the `share` and 1 - `share` quantiles: a steady state without start or tail."""
    times = sorted(times)
    lo, hi = int(len(times) * share), int(len(times) * (1 - share)) - 1
    return (hi - lo) / (times[hi] - times[lo])


def max_window(admitted: list[list[float]], span: float = 60.0) -> int:
    """The most tokens admitted within any `span` seconds (half-open windows, as localapi counts them)."""
    admitted = sorted(admitted)
    xs = [a[0] for a in admitted]
    sums = [0]
    for _, tok in admitted:
        sums.append(sums[-1] + tok)
    best = 0
    for j, t in enumerate(xs):
        i = bisect.bisect_right(xs, t - span)
        best = max(best, sums[j + 1] - sums[i])
    return best


def allowance_spent_at(admitted: list[list[float]], tpm: int) -> int:
    """The index of the admission that spent the first window's token allowance."""
    total = 0
    for i, (_, tok) in enumerate(sorted(admitted)):
        total += tok
        if total >= tpm:
            return i
    return len(admitted) - 1


def median_rows(runs: list[dict]) -> dict:
    """Per key, the median over runs of the numbers (None where a run has none)."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float)) and r.get(k) == r.get(k)]
        out[k] = statistics.median(vals) if vals else None
    return out


def print_table(title: str, rows: dict[str, dict], fmt: dict[str, str]) -> None:
    """rows: {client: {figure: value}}; one line per figure, one column per client."""
    clients = list(rows)
    width = max(len(k) for k in fmt) + 2
    print(f"\n{title}")
    print(" " * width + "".join(f"{c:>22}" for c in clients))
    for key, f in fmt.items():
        cells = []
        for c in clients:
            v = rows[c].get(key)
            cells.append(f"{'-':>22}" if v is None else f"{format(v, f):>22}")
        print(f"{key:<{width}}" + "".join(cells))
