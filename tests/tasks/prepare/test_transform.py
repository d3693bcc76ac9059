"""Local scratch directories: a dead run's copies are removed by the next run on the host."""

from __future__ import annotations

import os
import subprocess
import sys

from tasks.prepare.transform import sweep_dead_scratch


def test_the_scratch_of_a_dead_process_is_swept_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    left = tmp_path / f"vidbatch-{pid}-abc123"
    (left / "w1").mkdir(parents=True)
    (left / "w1" / "segment.mp4").write_bytes(b"x" * 100)
    empty = tmp_path / f"vidbatch-{pid}-empty"
    empty.mkdir()
    live = tmp_path / f"vidbatch-{os.getpid()}-live"
    live.mkdir()
    other = tmp_path / "vidbatch-notapid"
    other.mkdir()
    assert sorted(sweep_dead_scratch(str(tmp_path))) == sorted([left.name, empty.name])
    assert not left.exists() and not empty.exists() and live.exists() and other.exists()
