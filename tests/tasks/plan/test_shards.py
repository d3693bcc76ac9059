import threading
from datetime import date

import pytest

from tasks.config.run import OutputConfig, SourceConfig
from tasks.errors import ConfigError
from tasks.plan.shards import Shard, plan_shards, shards_for
from tasks.record.journal import LedgerWriter
from tasks.record.ledger import read_ledger
from tasks.record.totals import sum_totals


def test_shards_by_day_and_prefix():
    shards = plan_shards("2026-11-01", "2026-11-03", ["cam01/", "cam02"])
    assert shards == [Shard("cam01", date(2026, 11, 1), date(2026, 11, 2)), Shard("cam01", date(2026, 11, 2),
                      date(2026, 11, 3)), Shard("cam02", date(2026, 11, 1), date(2026, 11, 2)),
                      Shard("cam02", date(2026, 11, 2), date(2026, 11, 3))]
    assert shards[0].parameters("c.yaml") == {"config": "c.yaml", "prefix": "cam01", "since": "2026-11-01",
                                              "until": "2026-11-02"}
    assert shards[0].label == "cam01 2026-11-01"
    assert len({s.key("abc") for s in shards}) == 4 and shards[0].key("abc") == plan_shards(
        "2026-11-01", "2026-11-02", ["cam01"])[0].key("abc")
    assert plan_shards(prefixes=["a", "b"]) == [Shard("a"), Shard("b")]
    assert plan_shards("2026-11-01", "2026-11-02") == [Shard("", date(2026, 11, 1), date(2026, 11, 2))]
    assert plan_shards("2026-11-01", "2026-11-02")[0].parameters("c")["prefix"] is None


@pytest.mark.parametrize("kw, message", [({}, "date range"), ({"since": "2026-11-01"}, "both"),
                                         ({"since": "2026-11-02", "until": "2026-11-01"}, "after"),
                                         ({"since": "2026-11-01T10:00", "until": "2026-11-02"}, "whole days"),
                                         ({"prefixes": ["a", "a/"]}, "repeat")])
def test_bad_ranges_say_what_to_do(kw, message):
    with pytest.raises(ConfigError, match=message):
        plan_shards(**kw)


def test_without_a_layout_a_range_is_split_by_prefix_only_and_totals_add_up():
    assert shards_for(SourceConfig(url="s3://b/"), "2026-11-01", "2026-11-03", ["cam01", "cam02"]) == [
        Shard("cam01", date(2026, 11, 1), date(2026, 11, 3)), Shard("cam02", date(2026, 11, 1), date(2026, 11, 3))]
    assert shards_for(SourceConfig(url="s3://b/"), "2026-11-01", "2026-11-03") == [
        Shard("", date(2026, 11, 1), date(2026, 11, 3))]
    assert Shard("", date(2026, 11, 1), date(2026, 11, 3)).label == "(root) 2026-11-01..2026-11-03"
    laid_out = SourceConfig(url="s3://b/", layout="{camera}/{date:%Y/%m/%d}")
    assert len(shards_for(laid_out, "2026-11-01", "2026-11-03", ["cam01", "cam02"])) == 4  # by day: a day lists a day
    assert sum_totals([{"ok": 2, "error": 1, "total_tokens": 5}, {"ok": 3}]) == {
        "shards": 2, "ok": 5, "error": 1, "skipped_already_done": 0, "prompt_tokens": 0, "completion_tokens": 0,
        "total_tokens": 5, "estimated_prompt_tokens": 0}


def test_ledger_writer_loses_no_row_when_threads_add_while_it_flushes(tmp_path):
    from tests.tasks.record.test_ledger import row

    out = OutputConfig(url=str(tmp_path), flush_rows=3)
    w = LedgerWriter(out, "run-1")
    threads = [threading.Thread(target=lambda i=i: [w.add(row(f"k{i}-{j}")) for j in range(20)]) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert read_ledger(out).request_key.nunique() == 160
