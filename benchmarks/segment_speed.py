"""Segmentation speed: seconds of video cut per second of wall time, by stream copy and by re-encode.

Makes (or reuses from --cache) a lecture-like file with tasks.samples: slides that change every minute with a
moving pointer and a mono tone, h264 + aac in mp4, 640x360 at a low frame rate (10 fps by default; real
lectures are 25-30 fps, so re-encode speed per second of video is lower there by about that ratio, which is why
decoded frames per second are printed too). Then cuts it into windows of at most --max-s seconds as the
pipeline does: plan_segments with the file's keyframes and cut(mode="copy"), then plan_segments without
keyframes and cut(mode="reencode"). Prints the file's size and duration and, per mode, the segments, the sum
of their probed durations and the seconds of video cut per second of wall time. Not a timed test.

    .venv/bin/python benchmarks/segment_speed.py [--cache DIR] [--minutes 60] [--fps 10] [--max-s 100]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localapi.samples import SampleSpec, write_sample  # noqa: E402 - after sys.path setup
from tasks.media.probe import probe  # noqa: E402 - after sys.path setup
from tasks.media.segment import cut, keyframe_times, plan_segments  # noqa: E402 - after sys.path setup


def lecture(cache: Path, minutes: float, fps: int, width: int, height: int) -> Path:
    """The cached lecture-like file, made once (atomically) per set of parameters."""
    path = cache / f"lecture-{minutes:g}min-{width}x{height}-{fps}fps.mp4"
    if not path.exists():
        spec = SampleSpec(seconds=minutes * 60, scene_seconds=60, width=width, height=height, fps=fps, audio=True)
        print(f"making {path.name} ({spec}) ...", flush=True)
        t0 = time.perf_counter()
        partial = path.with_name(path.name + ".part")
        write_sample(str(partial), "mp4", spec)
        os.replace(partial, path)
        print(f"  made in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def run(src: Path, windows: list[tuple[float, float]], mode: str, out: Path) -> dict:
    """Cut every window in one mode; wall time, the segments' probed durations and the modes really used."""
    out.mkdir(exist_ok=True)
    durations, modes = [], set()
    t0 = time.perf_counter()
    for i, (a, b) in enumerate(windows):
        c = cut(str(src), a, b, str(out / f"seg{i:03d}.mp4"), mode=mode)
        modes.add(c.mode)
    wall = time.perf_counter() - t0
    for p in sorted(out.iterdir()):
        with open(p, "rb") as f:
            durations.append(probe(f, p.name).duration_s)
    shutil.rmtree(out)
    return {"wall": wall, "durations": durations, "modes": modes}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, help="folder for the generated lecture (default: a temporary folder)")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--max-s", type=float, default=100, help="the provider's duration limit per segment")
    args = ap.parse_args(argv)

    temp = None if args.cache else Path(tempfile.mkdtemp(prefix="segment-speed-"))
    cache = args.cache or temp
    cache.mkdir(parents=True, exist_ok=True)
    try:
        src = lecture(cache, args.minutes, args.fps, args.width, args.height)
        with open(src, "rb") as f:
            p = probe(f, src.name)
        size = src.stat().st_size
        print(f"file: {src.name}: {size / 1e6:.1f} MB, {p.duration_s:.1f} s ({p.duration_s / 60:.1f} min), "
              f"{p.width}x{p.height} at {p.fps:g} fps, {p.video_codec} + {p.audio_codec}, "
              f"{size * 8 / p.duration_s / 1000:.0f} kbit/s")
        t0 = time.perf_counter()
        keys = keyframe_times(str(src))
        gaps = sorted(b - a for a, b in zip(keys, keys[1:], strict=False)) or [p.duration_s]
        print(f"keyframe_times: {len(keys)} keyframes (median gap {gaps[len(gaps) // 2]:.1f} s, longest "
              f"{gaps[-1]:.1f} s) read in {time.perf_counter() - t0:.2f} s")
        plans = {"copy": plan_segments(p.duration_s, args.max_s, keyframes=keys),
                 "reencode": plan_segments(p.duration_s, args.max_s)}
        print(f"segments of at most {args.max_s:g} s (windows <= {args.max_s - 0.5:g} s):")
        for mode, windows in plans.items():
            r = run(src, windows, mode, cache / f"out-{mode}")
            cut_s = sum(b - a for a, b in windows)
            print(f"  {mode:8}: {len(windows)} segments (modes used: {', '.join(sorted(r['modes']))}), "
                  f"longest {max(r['durations']):.2f} s, probed durations sum to {sum(r['durations']):.2f} s; "
                  f"wall {r['wall']:.1f} s; {cut_s / r['wall']:.1f} s of video cut per s of wall time"
                  + (f" ({cut_s * p.fps / r['wall']:.0f} frames/s decoded and encoded)" if mode == "reencode" else ""))
        print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; "
              f"CPUs: {os.cpu_count()}")
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
