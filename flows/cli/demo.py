"""The demo: sample videos in a local bucket folder, the offline localapi, summarize twice, the ledger read back."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import yaml

from flows.cli.console import Progress
from localapi.samples import SampleSpec, write_sample_file
from tasks.config.load import PROJECT_ROOT, load_config
from tasks.record.ledger import read_ledger
from tasks.record.totals import set_progress

SAMPLES = {  # bucket path -> what the sample holds
    "cam01/2026/11/21/lobby 08h00.mp4": SampleSpec(seconds=6, scene_seconds=2, audio=True),
    "cam01/2026/11/21/lobby 09h00.webm": SampleSpec(seconds=8, scene_seconds=4, audio=False),
    "cam02/2026/11/21/gate#2+east.mov": SampleSpec(seconds=5, scene_seconds=2.5, audio=True),
    "lectures/introducción 100%.mpeg": SampleSpec(seconds=9, scene_seconds=3, audio=True),
}


BROKEN = "cam02/2026/11/21/broken.mp4"  # a text file named .mp4: one error row, the run goes on


SKIPPED = {"cam01/2026/11/21/notes.txt": b"operator notes\n", "cam01/2026/11/21/empty.mp4": b""}


def make_bucket(bucket: Path) -> None:
    """Write the sample videos, a broken one and two objects discovery skips."""
    if bucket.exists():
        shutil.rmtree(bucket)
    for rel, spec in SAMPLES.items():
        write_sample_file(bucket / rel, spec)
    (bucket / BROKEN).write_text("this is not a video\n")
    for rel, data in SKIPPED.items():
        (bucket / rel).write_bytes(data)


def run_demo(directory: str = "demo-output") -> int:
    from flows.cli.console import print_summary
    from flows.summarize import summarize

    base = Path(directory).resolve()
    bucket, ledger = base / "bucket", base / "ledger"
    if ledger.exists():
        shutil.rmtree(ledger)
    make_bucket(bucket)
    raw = yaml.safe_load((PROJECT_ROOT / "configs" / "demo.yaml").read_text())
    raw["source"]["url"], raw["output"]["url"] = str(bucket), str(ledger)
    config = base / "demo.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    print(f"demo: {len(SAMPLES)} sample videos, 1 broken file and 2 skippable objects in {bucket}")
    set_progress(Progress())
    first = asyncio.run(summarize(config=str(config)))
    print_summary(first)
    second = asyncio.run(summarize(config=str(config)))
    print(f"rerun: {second['ok'] + second['error']} items sent, {second['skipped_already_done']} already done "
          "(finished items are never paid for twice; `vidbatch run --all-errors` would try broken.mp4 again)")
    df = read_ledger(load_config(config).output)
    df = df.sort_values("created_at")
    print(f"\nParquet ledger: {ledger} ({len(df)} rows, {df['request_key'].nunique()} request keys)")
    for r in df.itertuples():
        name = r.source_uri.rsplit("/", 1)[-1]
        if r.status == "ok":
            answer = r.output_text.removeprefix("[localapi offline provider] ")
            print(f"  ok     {name:<26} {r.video_duration_s:4.1f} s  tokens {r.prompt_tokens:>5} "
                  f"(est. {r.estimated_prompt_tokens:>5}) + {r.completion_tokens:>3}  {answer[:110]}")
        else:
            print(f"  error  {name:<26} {r.error_type}: {r.error_message.removeprefix(r.source_uri + ': ')}")
    ok = df[df.status == "ok"]
    expected = len(SAMPLES) == ok["source_uri"].nunique() == len(ok) and second["ok"] + second["error"] == 0
    broken_only = set(df[df.status == "error"]["source_uri"].str.rsplit("/", n=1).str[-1]) == {"broken.mp4"}
    if expected and broken_only:
        print("\ndemo ok: every sample video answered once; broken.mp4 recorded as an error row, as intended")
        return 0
    print("\ndemo FAILED: the ledger does not hold what the demo expects", file=sys.stderr)
    return 1
