"""The summarize ledger's page: per day and job figures, plots, one self-contained file, read in headless Chromium."""

from __future__ import annotations

import re
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.cli.main import main
from tasks.config.run import OutputConfig
from tasks.record.ledger import write_rows

CHROMIUM = "/usr/bin/chromium"


def rows() -> list[dict]:
    out = []
    for day, n_ok, errors in ((21, 3, ["server"]), (22, 2, ["budget", "budget", "media"])):
        for i in range(n_ok + len(errors)):
            ok = i < n_ok
            out.append({"run_id": f"r{day}", "job": "nightly", "request_key": f"k{day}-{i}",
                        "created_at": datetime(2026, 11, day, 1, i, tzinfo=UTC), "status": "ok" if ok else "error",
                        "error_type": None if ok else errors[i - n_ok], "latency_ms": 100 * (i + 1),
                        "prompt_tokens": 1000 if ok else None, "prompt_video_tokens": 900 if ok else None,
                        "prompt_audio_tokens": 90 if ok else None, "prompt_text_tokens": 10 if ok else None,
                        "completion_tokens": 40 if ok else None, "estimated_prompt_tokens": 1000,
                        "cost": 0.25 if ok else None, "estimated_cost": 0.24, "currency": "XTS"})
    return out


def test_the_ledger_page_sums_each_day_and_opens_in_chromium(tmp_path):
    ledger = tmp_path / "ledger"
    write_rows(rows(), OutputConfig(url=str(ledger)), "r")
    assert main(["report", str(ledger)]) == 0
    page = (ledger / "_report.html").read_text()
    assert not re.findall(r'(?:src|href)="(?!data:)', page)  # self-contained: nothing to fetch
    assert page.count("<svg") == 2 and "cost per day" in page and "errors per day" in page
    import pandas as pd

    assert len(pd.read_parquet(ledger)) == 9  # the page in the ledger folder is no Parquet reader's business
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed: `scripts/dev test` installs Debian's package when run as root")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", f"--user-data-dir={profile}", "--dump-dom",
                              (ledger / "_report.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", dom) if "<td>" in r]
    assert [c[:5] for c in cells] == [["2026-11-21", "nightly", "4", "3", "server 1"],
                                      ["2026-11-22", "nightly", "5", "2", "budget 2, media 1"]]
    assert cells[0][5:9] == ["2,700", "270", "30", "120"] and cells[0][11:14] == ["0.720000", "0.750000", "XTS"]
    assert cells[1][12] == "0.500000" and cells[0][14] == "250"  # p50 of 100..400 ms
    assert dom.count("<rect") == 2 + 3  # a cost bar per day; error bars: server, budget, media


def test_the_page_reads_a_day_at_a_time_and_only_the_columns_it_shows(tmp_path, monkeypatch):
    import tasks.record.report as report

    ledger = tmp_path / "ledger"
    out = OutputConfig(url=str(ledger))
    write_rows(rows(), out, "r")
    write_rows([{**r, "output_text": "x" * 1000} for r in rows()[:3]], out, "r")  # identical copies: counted once
    reads = []
    real = report.read_partitions
    monkeypatch.setattr(report, "read_partitions", lambda *a: reads.append((a[2], a[4])) or real(*a))
    figures = report.ledger_figures(out)
    assert reads == [(["2026-11-21"], report.REPORT_COLUMNS), (["2026-11-22"], report.REPORT_COLUMNS)]
    assert "output_text" not in report.REPORT_COLUMNS and figures.rows == 9
    assert figures.cost == {"2026-11-21": 0.75, "2026-11-22": 0.5}
    assert figures.errors == {"budget": {"2026-11-22": 2}, "media": {"2026-11-22": 1}, "server": {"2026-11-21": 1}}
    page = report.render(figures, "t")
    assert "9 rows" in page and page.count("<tr>") == 3  # the header and a row per day and job
