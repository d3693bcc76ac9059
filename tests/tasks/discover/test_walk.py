"""Listing proportional to the window: a declared layout, glob pruning, flat object-store listing, counted calls."""

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tasks.config.layout import parse_layout
from tasks.config.load import load_config
from tasks.config.run import SourceConfig
from tasks.discover.listing import DiscoverStats, iter_objects, open_source
from tasks.errors import ConfigError, SourceError
from tests.conftest import seed_bucket

DAYS = [datetime(2026, 10, 1, tzinfo=UTC) + timedelta(days=i) for i in range(60)]
CAMERAS = ["cam01", "cam02", "cam03"]


def dated_tree(root, days=DAYS, cameras=CAMERAS, per_day=2):
    """camNN/YYYY/MM/DD/clip-N.mp4 with each file's mtime inside its day."""
    for cam in cameras:
        for day in days:
            d = root / cam / day.strftime("%Y/%m/%d")
            d.mkdir(parents=True)
            for n in range(per_day):
                f = d / f"clip-{n}.mp4"
                f.write_bytes(b"v" * 10)
                t = (day + timedelta(hours=1 + n)).timestamp()
                os.utime(f, (t, t))


class CountingFS:
    """Records the paths a local filesystem is asked to list (the filesystem's own calls, not vidbatch's count)."""

    def __init__(self, fs, monkeypatch):
        self.paths: list[str] = []
        real = type(fs).ls

        def ls(inner, path, detail=True, **kw):
            self.paths.append(path)
            return real(inner, path, detail=detail, **kw)

        monkeypatch.setattr(type(fs), "ls", ls)


def run_listing(url, since=None, until=None, seen=None, **kw):
    src = SourceConfig(url=url, **kw)
    fs, root = open_source(src)
    if seen is not None:  # count every ListObjectsV2 at the botocore client: what goes over the wire
        fs.s3.meta.events.register("provide-client-params.s3.ListObjectsV2", lambda params, **_: seen.append(params))
    stats = DiscoverStats()
    return [o.rel for o in iter_objects(fs, root, src, since, until, stats=stats)], stats


def test_layout_templates_parse_or_name_the_template():
    lay = parse_layout("{camera}/{date:%Y/%m/%d}/")
    assert [s.kind for s in lay.segments] == ["glob", "date", "date", "date"] and lay.finest == 2
    assert lay.fits("cam01/2026/11/30/a.mp4") and lay.fits("cam01/2026/11/30/sub/a.mp4")
    assert not lay.fits("cam01/2026/11/a.mp4") and not lay.fits("cam01/misc/11/30/a.mp4")
    one = parse_layout("site-a/day={date:%Y-%m-%d}/{camera:cam*}")
    assert one.fits("site-a/day=2026-11-30/cam7/x.mp4") and not one.fits("site-a/day=2026-11-30/door/x.mp4")
    assert parse_layout("{date:%Y/%m/%d/%H}").date_values(
        datetime(2026, 11, 30, 22, 30, tzinfo=UTC), datetime(2026, 12, 1, 1, tzinfo=UTC)) == [
        ("2026", "11", "30", "22"), ("2026", "11", "30", "23"), ("2026", "12", "01", "00")]
    for bad, says in [("{camera}/{date:%Y/%d}", "%Y, %m, %d, %H in this order"), ("{date:%Y/%q}", "%q"),
                      ("{camera/{date:%Y}", "brace"), ("a//{date:%Y}", "empty segment"), ("{date}", "format"),
                      ("{date:%Y}/{date:%Y}", "more than once")]:
        with pytest.raises(ConfigError, match="source.layout") as e:
            parse_layout(bad)
        assert says in str(e.value) and bad in str(e.value)


def test_a_bad_template_stops_at_load_naming_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"job: j\nsource: {{url: {tmp_path}, layout: '{{camera}}/{{date:%Y/%d}}'}}\n"
                   "provider: {name: p, dialect: openai, base_url: 'http://127.0.0.1:9', model: m}\n"
                   "prompt: {user: hi}\noutput: {url: " + str(tmp_path / "out") + "}\n")
    with pytest.raises(ConfigError, match=r"source.layout '\{camera\}/\{date:%Y/%d\}'"):
        load_config(cfg)


def test_a_night_over_a_dated_tree_lists_only_its_days(tmp_path, monkeypatch):
    dated_tree(tmp_path / "src")
    calls = CountingFS(open_source(SourceConfig(url=str(tmp_path / "src")))[0], monkeypatch)
    since = datetime(2026, 11, 20, 6, tzinfo=UTC)
    until = datetime(2026, 11, 21, 6, tzinfo=UTC)
    rels, stats = run_listing(str(tmp_path / "src"), since, until, layout="{camera}/{date:%Y/%m/%d}/",
                              layout_lag_days=0)
    assert sorted(rels) == sorted(f"{c}/2026/11/21/clip-{n}.mp4" for c in CAMERAS for n in (0, 1))
    listed = {p.split("/src/", 1)[-1] if "/src/" in p else "(root)" for p in calls.paths}
    assert listed == {"(root)"} | {f"{c}/2026/11/{d}" for c in CAMERAS for d in ("20", "21")}
    assert stats.list_calls == len(calls.paths) == 1 + 3 * 2  # the root, then each camera's two days
    assert stats.skipped["time_window"] == 3 * 2  # the 20th's clips are listed (its hours meet the window) and skipped


def test_the_lag_lists_the_days_before_the_window_for_late_uploads(tmp_path):
    dated_tree(tmp_path / "src", cameras=["cam01"])
    late = tmp_path / "src/cam01/2026/11/19/clip-0.mp4"
    t = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()
    os.utime(late, (t, t))  # the 19th's clip uploaded on the 20th
    window = (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))
    rels, _ = run_listing(str(tmp_path / "src"), *window, layout="{camera}/{date:%Y/%m/%d}/")
    assert "cam01/2026/11/19/clip-0.mp4" in rels
    rels, _ = run_listing(str(tmp_path / "src"), *window, layout="{camera}/{date:%Y/%m/%d}/", layout_lag_days=0)
    assert "cam01/2026/11/19/clip-0.mp4" not in rels


def test_objects_off_the_layout_are_counted_and_reported(tmp_path):
    dated_tree(tmp_path / "src", days=DAYS[:2], cameras=["cam01"])
    (tmp_path / "src/stray.mp4").write_bytes(b"v")
    (tmp_path / "src/cam01/misc").mkdir()
    (tmp_path / "src/cam01/misc/x.mp4").write_bytes(b"v")
    rels, stats = run_listing(str(tmp_path / "src"), layout="{camera}/{date:%Y/%m/%d}/")
    assert len(rels) == 4  # no window: every date directory, listed
    assert stats.skipped["layout"] == 2 and stats.unfit_sample in {"stray.mp4", "cam01/misc/"}


def test_a_layout_that_matches_nothing_names_the_template_and_a_path(tmp_path):
    d = tmp_path / "src/2026/11/30/cam01"
    d.mkdir(parents=True)
    (d / "a.mp4").write_bytes(b"v")
    with pytest.raises(SourceError, match=r"source.layout '\{camera\}/\{date:%Y/%m/%d\}/' matches nothing.*"
                                          r"'2026/11/30/cam01/a.mp4'"):
        run_listing(str(tmp_path / "src"), datetime(2026, 11, 30, tzinfo=UTC), None,
                    layout="{camera}/{date:%Y/%m/%d}/")
    # the right layout over an empty window is no error: nothing new tonight
    rels, _ = run_listing(str(tmp_path / "src"), datetime(2027, 1, 5, tzinfo=UTC), None,
                          layout="{date:%Y/%m/%d}/{camera}")
    assert rels == []


def test_a_glob_pruned_walk_never_lists_an_excluded_directory(tmp_path, monkeypatch):
    dated_tree(tmp_path / "src")
    (tmp_path / "src/cam02/2026/11/05/sub").mkdir()
    (tmp_path / "src/cam02/2026/11/05/sub/deep.mp4").write_bytes(b"v")  # a last `**` matches at any depth
    calls = CountingFS(open_source(SourceConfig(url=str(tmp_path / "src")))[0], monkeypatch)
    rels, stats = run_listing(str(tmp_path / "src"), include=["cam02/2026/11/*/**"])
    assert len(rels) == 29 * 2 + 1 and all(r.startswith("cam02/2026/11/") for r in rels)
    assert all("/src/cam02/2026/11" in p for p in calls.paths)  # the literal prefix: listed from there down
    calls.paths.clear()
    rels, _ = run_listing(str(tmp_path / "src"), include=["*/2026/11/0[1-3]/*.mp4"])
    assert len(rels) == 3 * 3 * 2
    assert not [p for p in calls.paths if "/10" in p.split("/src/")[-1] or "/11/1" in p or "/11/2" in p]


@pytest.fixture
def counted_s3(s3, monkeypatch):
    """moto S3, listing pages of 100 keys (S3's own page is 1,000: the same rule, with fewer objects to seed)."""
    import tasks.discover.walk

    monkeypatch.setattr(tasks.discover.walk, "PAGE_KEYS", 100)
    fs, endpoint = s3
    return fs, endpoint, []


def test_s3_without_a_layout_lists_flat_one_request_per_thousand_keys(counted_s3):
    fs, endpoint, seen = counted_s3
    keys = {f"cam{c:02d}/2026/11/{d:02d}/k{n}.mp4": b"v" for c in range(5) for d in range(1, 21) for n in range(2)}
    keys["odd//double.mp4"] = b"v"  # an empty path segment: an object all the same
    seed_bucket(fs, "vids", keys)
    rels, stats = run_listing("s3://vids/", seen=seen, storage_options={"endpoint_url": endpoint})
    assert len(rels) == len(keys) == 201 and "odd//double.mp4" in rels
    assert len(seen) == stats.list_calls == 3  # ceil(201 / 100): no delimiter walk
    assert all("Delimiter" not in p for p in seen)


def test_s3_keys_with_double_slashes_are_listed_and_read(counted_s3):
    fs, endpoint, _ = counted_s3
    seed_bucket(fs, "vids", {"odd//double.mp4": b"dd", "odd/plain.mp4": b"p"})
    src = SourceConfig(url="s3://vids/odd/", storage_options={"endpoint_url": endpoint})
    sfs, root = open_source(src)
    objs = list(iter_objects(sfs, root, src))
    assert sorted(o.uri for o in objs) == ["s3://vids/odd//double.mp4", "s3://vids/odd/plain.mp4"]
    double = next(o for o in objs if "double" in o.uri)
    assert sfs.cat_file(double.path) == b"dd"


def test_s3_with_a_layout_lists_the_windows_directories_plus_its_depth(counted_s3):
    fs, endpoint, seen = counted_s3
    keys = {f"cam{c:02d}/2026/11/{d:02d}/k{n}.mp4": b"v" for c in range(6) for d in range(20, 31) for n in range(3)}
    seed_bucket(fs, "vids", keys)
    rels, stats = run_listing("s3://vids/", datetime(2026, 11, 30, 2, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC),
                              seen=seen,
                              storage_options={"endpoint_url": endpoint}, layout="{camera}/{date:%Y/%m/%d}/",
                              layout_lag_days=0)
    assert rels == []  # moto's objects were modified today, outside the window: listed, then skipped by time
    assert stats.listed == stats.skipped["time_window"] == 6 * 3  # only the 30th's objects were listed at all
    window_dirs = 6 * 1
    assert len(seen) == stats.list_calls == 1 + window_dirs <= window_dirs + 4
    assert sorted(p.get("Prefix") for p in seen)[1:] == [f"cam{c:02d}/2026/11/30/" for c in range(6)]


def shard_listing(url, shard, **source):
    """A backfill shard's listing as its summarize run makes it: the shard's parameters, its window, its prefix."""
    from tasks.plan.batches import run_window

    src = SourceConfig(url=url, **source)
    cfg = load_config_from(src)
    p = shard.parameters("c.yaml")
    window = run_window(cfg, p["since"], p["until"], False)
    fs, root = open_source(src)
    stats = DiscoverStats()
    return [o.rel for o in iter_objects(fs, root, src, window.since, window.until, stats,
                                        prefix=p["prefix"] or "")], stats


def load_config_from(src):
    from tasks.config.run import RunConfig

    return RunConfig.model_validate({"source": src.model_dump(), "output": {"url": "/tmp/unused"},
                                     "prompt": {"user": "u"},
                                     "provider": {"dialect": "openai", "base_url": "x", "model": "m"}})


def test_a_backfill_day_shard_lists_only_its_days_below_its_prefix(tmp_path, monkeypatch):
    from tasks.plan.shards import shards_for

    dated_tree(tmp_path / "src")
    calls = CountingFS(open_source(SourceConfig(url=str(tmp_path / "src")))[0], monkeypatch)
    source = {"layout": "{camera}/{date:%Y/%m/%d}/", "layout_lag_days": 1}
    shards = shards_for(SourceConfig(url=str(tmp_path / "src"), **source), "2026-11-01", "2026-11-30",
                        ["cam02", "cam03"])
    assert len(shards) == 2 * 29
    rels, stats = shard_listing(str(tmp_path / "src"), shards[19], **source)  # cam02, 2026-11-20
    assert sorted(rels) == ["cam02/2026/11/20/clip-0.mp4", "cam02/2026/11/20/clip-1.mp4"]  # relative to source.url
    assert sorted(p.split("/src/", 1)[1] for p in calls.paths) == ["cam02/2026/11/19", "cam02/2026/11/20"]
    assert stats.list_calls == 2  # the lag day and the shard's day: no camera level, no other day, no other camera
    calls.paths.clear()
    rels, stats = shard_listing(str(tmp_path / "src"), replace(shards[19], prefix=""), **source)
    assert len(rels) == 3 * 2 and stats.list_calls == 1 + 3 * 2  # no prefix: the cameras, then each one's two days
    with pytest.raises(ConfigError, match=r"prefix 'cam02/misc' does not fit source.layout"):
        shard_listing(str(tmp_path / "src"), replace(shards[0], prefix="cam02/misc"), **source)


def test_without_a_layout_a_prefix_shard_lists_its_prefix_once_globs_relative_to_the_source(tmp_path, monkeypatch):
    from tasks.plan.shards import shards_for

    dated_tree(tmp_path / "src", days=DAYS[:5])
    calls = CountingFS(open_source(SourceConfig(url=str(tmp_path / "src")))[0], monkeypatch)
    (shard, _) = shards_for(SourceConfig(url=str(tmp_path / "src")), "2026-10-02", "2026-10-04", ["cam02", "cam03"])
    rels, stats = shard_listing(str(tmp_path / "src"), shard, include=["cam0[12]/**"])
    assert sorted(rels) == [f"cam02/2026/10/{d:02d}/clip-{n}.mp4" for d in (2, 3) for n in (0, 1)]
    assert all("/src/cam02" in p for p in calls.paths) and stats.list_calls == len(calls.paths) == 1 + 1 + 1 + 5
