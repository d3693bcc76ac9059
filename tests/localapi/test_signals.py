"""What localapi tells a client about its limits: x-ratelimit-* headers, a retry delay in the 429 body, a daily
quota."""

from __future__ import annotations

import pytest

from localapi import LocalAPIConfig
from localapi.http import duration_text


@pytest.fixture
def small(kit):
    return kit.body("openai", kit.part("openai", spec=kit.short), text="abcd")


def test_ratelimit_headers_count_down_the_window(api, post, small, kit):
    tokens = kit.video_tokens(2, False) + 1
    api.config.rpm, api.config.tpm = 3, 10 * tokens
    first, second = post("openai", small), post("openai", small)
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert [r.headers["x-ratelimit-remaining-requests"] for r in (first, second)] == ["2", "1"]
    assert first.headers["x-ratelimit-limit-tokens"] == str(10 * tokens)
    assert second.headers["x-ratelimit-remaining-tokens"] == str(8 * tokens)
    assert second.headers["x-ratelimit-reset-requests"] == "60s"    # the window is empty again 60 s after the last
    post("openai", small)
    refused = post("openai", small)
    assert refused.status_code == 429 and refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_no_ratelimit_headers_without_limits_or_when_turned_off(api, post, small):
    assert not any(h.startswith("x-ratelimit") for h in post("openai", small).headers)
    api.config.rpm, api.config.ratelimit_headers = 5, False
    assert not any(h.startswith("x-ratelimit") for h in post("openai", small).headers)


def test_faults_after_admission_still_carry_the_headers(api, post, small):
    api.config.rpm = 10
    api.config.script.append("503")
    resp = post("openai", small)
    assert resp.status_code == 503 and resp.headers["x-ratelimit-remaining-requests"] == "9"


@pytest.mark.parametrize("where,header,body", [("header", True, False), ("body", False, True), ("both", True, True)])
def test_429_says_how_long_in_the_header_the_body_or_both(api, post, small, where, header, body):
    api.config.retry_after_in, api.config.retry_after_s = where, 7
    api.config.script.append("429")
    resp = post("openai", small)
    assert resp.status_code == 429
    assert (resp.headers.get("Retry-After") == "7") == header
    details = resp.json()["error"].get("details")
    assert (details == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]) == body


def test_window_429_retry_delay_in_the_body(api, post, small):
    api.config.rpm, api.config.retry_after_in = 1, "body"
    post("openai", small)
    resp = post("openai", small)
    delay = resp.json()["error"]["details"][0]["retryDelay"]
    assert resp.status_code == 429 and "Retry-After" not in resp.headers and 58 <= int(delay[:-1]) <= 60


def test_daily_quota_answers_insufficient_quota_until_reset(api, post, small):
    api.config.daily_quota = 2
    assert [post("openai", small).status_code for _ in range(2)] == [200, 200]
    resp = post("openai", small)
    error = resp.json()["error"]
    assert resp.status_code == 429 and error["type"] == error["code"] == "insufficient_quota"
    assert "Retry-After" not in resp.headers
    api.reset()
    assert post("openai", small).status_code == 200


def test_admitted_log_records_what_the_window_counted(api, post, small, kit):
    api.config.rpm = 1
    post("openai", small)
    post("openai", small)
    admitted = api.stats()["admitted"]
    assert len(admitted) == 1 and admitted[0][1] == kit.video_tokens(2, False) + 1


def test_config_checks_the_new_settings(client):
    for bad, message in (({"retry_after_in": "trailer"}, "retry_after_in"), ({"daily_quota": -1}, "daily_quota"),
                         ({"ratelimit_headers": "yes"}, "ratelimit_headers")):
        resp = client.post("/_localapi/config", json=bad)
        assert resp.status_code == 400 and message in resp.json()["error"]["message"]
    with pytest.raises(ValueError, match="daily_quota"):
        LocalAPIConfig(daily_quota=1.5)


def test_duration_format():
    assert [duration_text(s) for s in (0, 0.12, 1, 59.8734, 60)] == ["0ms", "120ms", "1s", "59.873s", "60s"]
