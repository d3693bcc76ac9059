"""Peak RSS of 8 concurrent inline requests of ~70 MB videos: vidbatch's streamed bodies vs the naive way.

Run: .venv/bin/python benchmarks/memory.py [--mb 70] [--videos 8]

localapi runs in its own process (its memory is not counted). vidbatch runs as a user runs it
(`vidbatch run CONFIG` in a child process, Prefect and all); the naive baseline is a child process
that reads each file, base64-encodes it, builds the JSON string and posts it with httpx, 8 at once.
Each child reports its own peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def make_video(path: Path, mb: int) -> None:
    """A raw-video .mov of about `mb` MB (noise frames: no codec shrinks them)."""
    import av
    import numpy as np

    w, h, fps = 640, 480, 10
    frames = max(1, int(mb * 1024 * 1024 / (w * h * 2)))  # uyvy422: 2 bytes per pixel
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mov") as out:
        s = out.add_stream("rawvideo", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "uyvy422"
        s.codec_context.time_base = Fraction(1, fps)
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NAIVE = r'''
import asyncio, base64, json, resource, sys, httpx
url, key, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
async def one(client, path):
    data = open(path, "rb").read()
    b64 = base64.b64encode(data).decode()
    body = json.dumps({"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Summarize."},
        {"type": "video_url", "video_url": {"url": "data:video/mov;base64," + b64}}]}]})
    r = await client.post(url, content=body,
                          headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    return r.status_code
async def main():
    async with httpx.AsyncClient(timeout=600) as client:
        codes = await asyncio.gather(*(one(client, p) for p in paths))
    print(json.dumps({"codes": codes, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
asyncio.run(main())
'''

RSS_WRAPPER = r'''
import resource, runpy, sys, atexit, json
atexit.register(lambda: print("PEAK_RSS_MB " + json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                              file=sys.stderr))
sys.argv = ["vidbatch"] + sys.argv[1:]
from flows.cli.main import main
raise SystemExit(main())
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=70)
    ap.add_argument("--videos", type=int, default=8)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidbatch-mem-"))
    try:
        bucket = work / "bucket"
        bucket.mkdir()
        first = bucket / "v0.mov"
        t = time.monotonic()
        make_video(first, args.mb)
        for i in range(1, args.videos):
            shutil.copy(first, bucket / f"v{i}.mov")
        size_mb = first.stat().st_size / 2 ** 20
        print(f"{args.videos} videos of {size_mb:.1f} MB made in {time.monotonic() - t:.0f} s")
        port, key = free_port(), "bench-key"
        env = {**os.environ, "BENCH_KEY": key, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        server = subprocess.Popen([PY, "-m", "localapi", "--port", str(port), "--api-key-env", "BENCH_KEY", "--quiet"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            import httpx
            for _ in range(100):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/v1/models")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            config = work / "run.yaml"
            config.write_text(json.dumps({
                "job": "memory-bench", "source": {"url": str(bucket)},
                "provider": {"dialect": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                             "model": "google/gemini-2.5-flash", "api_key_env": "BENCH_KEY", "delivery": "inline",
                             "timeout_s": 600, "limits": {"concurrency": args.videos}},
                "prompt": {"user": "Summarize."}, "output": {"url": str(work / "ledger")}}))
            t = time.monotonic()
            done = subprocess.run([PY, "-c", RSS_WRAPPER, "run", str(config), "--quiet"], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            pipeline_s = time.monotonic() - t
            peak = [ln for ln in done.stderr.splitlines() if ln.startswith("PEAK_RSS_MB")]
            if done.returncode != 0 or not peak:
                print(done.stdout[-2000:], done.stderr[-3000:])
                return 1
            pipeline_mb = float(peak[-1].split()[1])
            ok = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("ok ")]
            t = time.monotonic()
            naive = subprocess.run([PY, "-c", NAIVE, f"http://127.0.0.1:{port}/v1/chat/completions", key,
                                    *map(str, sorted(bucket.iterdir()))], capture_output=True, text=True, env=env)
            naive_s = time.monotonic() - t
            result = json.loads(naive.stdout.strip().splitlines()[-1])
        finally:
            server.terminate()
            server.wait()
        print(f"vidbatch (vidbatch run, streamed inline bodies): peak RSS {pipeline_mb:.0f} MB, {pipeline_s:.0f} s, "
              f"{ok[0].strip() if ok else '?'}")
        print(f"naive (bytes -> base64 -> JSON string, httpx):    peak RSS {result['peak_rss_mb']:.0f} MB, "
              f"{naive_s:.0f} s, statuses {sorted(set(result['codes']))}")
        print(f"ratio vidbatch / naive: {pipeline_mb / result['peak_rss_mb']:.2f}  "
              f"(target: vidbatch under 400 MB whatever the video size)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
