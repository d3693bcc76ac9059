"""The output probe: a run that cannot record stops before its first request, naming the output."""

from __future__ import annotations

import os

import pytest

from tasks.config.run import OutputConfig
from tasks.errors import ConfigError
from tasks.record.writable import check_writable


def test_a_writable_output_is_left_as_it_was(tmp_path):
    check_writable(OutputConfig(url=str(tmp_path / "new" / "ledger")))
    assert list(tmp_path.iterdir()) == []  # the directories the probe made are gone too
    (tmp_path / "ledger").mkdir()
    check_writable(OutputConfig(url=str(tmp_path / "ledger")))
    assert list((tmp_path / "ledger").iterdir()) == []


def test_an_output_path_that_is_a_file(tmp_path):
    (tmp_path / "ledger").write_text("I am a file")
    for url in (tmp_path / "ledger", tmp_path / "ledger" / "below"):
        with pytest.raises(ConfigError, match=f"output.url '{url}': not writable: .*file, not a directory"):
            check_writable(OutputConfig(url=str(url)))


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs: read-only even for root")
def test_a_read_only_directory():
    with pytest.raises(ConfigError, match="output.url '/sys/kernel/vidbatch-ledger': not writable: permission"):
        check_writable(OutputConfig(url="/sys/kernel/vidbatch-ledger"))


def test_a_missing_s3_bucket_and_a_present_one(s3):
    fs, endpoint = s3
    opts = {"endpoint_url": endpoint}
    with pytest.raises(ConfigError, match="output.url 's3://no-such-bucket/ledger': not writable"):
        check_writable(OutputConfig(url="s3://no-such-bucket/ledger", storage_options=opts))
    fs.mkdir("out")
    check_writable(OutputConfig(url="s3://out/ledger", storage_options=opts))
    assert fs.find("out") == []


def test_credentials_in_the_url_are_not_named(s3):
    _, endpoint = s3
    with pytest.raises(ConfigError) as e:
        check_writable(OutputConfig(url="s3://AKIAEXAMPLE:SeCrEt123@no-such-bucket/l",
                                    storage_options={"endpoint_url": endpoint}))
    assert "SeCrEt123" not in str(e.value) and "AKIAEXAMPLE" not in str(e.value)
