from datetime import UTC, datetime, timedelta

import pytest

from tasks.config.run import SourceConfig
from tasks.discover.listing import DiscoverStats, iter_objects, matches, open_source
from tasks.errors import SourceError
from tests.conftest import seed_bucket

OBJECTS = {
    "cam01/2026/11/20/a.mp4": b"x" * 10,
    "cam01/2026/11/21/b.MOV": b"x" * 11,
    "cam01/2026/11/21/c with space#1+%.webm": b"x" * 12,
    "cam01/2026/11/21/vidéo ünïcode.3gp": b"x" * 13,
    "cam01/2026/11/21/notes.txt": b"text",
    "cam01/2026/11/21/zero.mp4": b"",
    "cam02/2026/11/21/d.avi": b"x" * 14,
    "cam02/tmp/e.mp4": b"x" * 15,
}


def listing(url, stats=None, since=None, until=None, **kw):
    src = SourceConfig(url=url, **kw)
    fs, root = open_source(src)
    return [o.rel for o in iter_objects(fs, root, src, since, until, stats=stats)]


def test_globs():
    assert matches("cam01/2026/11/21/b.mp4", ["cam01/**/*.mp4"])
    assert matches("cam01/b.mp4", ["**/*.mp4"]) and matches("b.mp4", ["**/*.mp4"])
    assert matches("x/y/b.mp4", ["*.mp4"])  # no slash: matches the file name
    assert not matches("cam02/2026/b.mp4", ["cam01/**"])
    assert matches("cam01/2026/11/21/b.mp4", ["cam01/2026/11/2[01]/*"])


def test_s3_listing_with_custom_endpoint_counts_skips(s3):
    fs, endpoint = s3
    seed_bucket(fs, "videos", OBJECTS)
    stats = DiscoverStats()
    rels = listing("s3://videos/", stats, storage_options={"endpoint_url": endpoint}, exclude=["**/tmp/**"])
    assert rels == ["cam01/2026/11/20/a.mp4", "cam01/2026/11/21/b.MOV", "cam01/2026/11/21/c with space#1+%.webm",
                    "cam01/2026/11/21/vidéo ünïcode.3gp", "cam02/2026/11/21/d.avi"]
    assert stats.skipped == {"extension": 1, "empty": 1, "filtered": 1, "time_window": 0}
    assert stats.listed == 8 and stats.selected == 5
    src = SourceConfig(url="s3://videos/cam02", storage_options={"endpoint_url": endpoint})
    fs2, root = open_source(src)
    obj = next(iter_objects(fs2, root, src))
    assert obj.uri == "s3://videos/cam02/2026/11/21/d.avi" and obj.size == 14 and obj.etag and obj.mtime


def test_date_prefix_include(s3):
    fs, endpoint = s3
    seed_bucket(fs, "videos", OBJECTS)
    rels = listing("s3://videos", storage_options={"endpoint_url": endpoint}, include=["cam0*/2026/11/21/*"])
    assert rels == ["cam01/2026/11/21/b.MOV", "cam01/2026/11/21/c with space#1+%.webm",
                    "cam01/2026/11/21/vidéo ünïcode.3gp", "cam02/2026/11/21/d.avi"]


def test_local_paths_file_urls_and_time_window(tmp_path):
    for rel, data in OBJECTS.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    plain = listing(str(tmp_path))
    assert listing(f"file://{tmp_path}") == plain and len(plain) == 6
    future = datetime.now(UTC) + timedelta(days=1)
    stats = DiscoverStats()
    assert listing(str(tmp_path), stats, since=future) == []
    assert stats.skipped["time_window"] == 6
    assert len(listing(str(tmp_path), until=future)) == 6


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no such directory or bucket"):
        listing(str(tmp_path / "missing"))


def test_missing_bucket_is_an_error_empty_prefix_is_not(s3):
    fs, endpoint = s3
    seed_bucket(fs, "videos", {"a/x.mp4": b"1"})
    assert listing("s3://videos/2027/", storage_options={"endpoint_url": endpoint}) == []
    with pytest.raises(SourceError, match="no such directory or bucket"):
        listing("s3://no-such-bucket/", storage_options={"endpoint_url": endpoint})
