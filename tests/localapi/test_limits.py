"""Rate limits, concurrency, scripted and random faults, latency and the control endpoints."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import pytest

from localapi import LocalAPI, LocalAPIConfig


@pytest.fixture
def small(kit):
    """A cheap valid openai request (2 s silent sample)."""
    return kit.body("openai", kit.part("openai", spec=kit.short), text="abcd")


def assert_rate_limited(resp) -> str:
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limited"
    assert error["message"].startswith("rate limit")
    return resp.headers["Retry-After"]


def test_rpm_window_answers_429_with_retry_after_seconds(api, post, small):
    api.config.rpm = 2
    assert [post("openai", small).status_code for _ in range(2)] == [200, 200]
    retry_after = assert_rate_limited(post("openai", small))
    assert 58 <= int(retry_after) <= 60
    assert api.stats()["by_status"] == {"200": 2, "429": 1}


def test_rpm_retry_after_as_http_date(api, post, small):
    api.config.rpm, api.config.retry_after_format = 1, "http-date"
    assert post("openai", small).status_code == 200
    when = parsedate_to_datetime(assert_rate_limited(post("openai", small)))
    assert 58 <= (when - datetime.now(UTC)).total_seconds() <= 61


def test_rpm_is_checked_before_decoding(api, post, small):
    api.config.rpm = 1
    assert post("openai", small).status_code == 200
    assert_rate_limited(post("openai", {"not": "valid"}))


def test_tpm_counts_prompt_tokens(api, post, small, kit):
    tokens = kit.video_tokens(2, False) + 1
    api.config.tpm = 2 * tokens + 10
    assert [post("openai", small).json()["usage"]["prompt_tokens"] for _ in range(2)] == [tokens, tokens]
    assert 58 <= int(assert_rate_limited(post("openai", small))) <= 60
    api.reset()
    api.config.tpm = tokens - 1
    resp = post("openai", small)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"


def test_concurrency_limit(api, kit, small):
    api.config.concurrency, api.config.latency = 1, (0.5, 0.5)
    url = api.url + kit.paths["openai"]
    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(lambda _: httpx.post(url, json=small, headers={"Authorization": "Bearer t"},
                                                      timeout=10, trust_env=False), range(3)))
    assert sorted(r.status_code for r in responses) == [200, 429, 429]
    assert {r.headers.get("Retry-After") for r in responses if r.status_code == 429} == {"1"}
    assert api.stats()["in_flight_max"] >= 2


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [("429", 429, "rate_limit_error"), ("500", 500, "server_error"), ("502", 502, "server_error"),
     ("503", 503, "server_error"), ("504", 504, "server_error"), ("400", 400, "invalid_request_error"),
     ("401", 401, "authentication_error")],
)
def test_scripted_error_faults(api, post, small, kind, status, error_type):
    api.config.script.extend([kind, "ok"])
    resp = post("openai", small)
    assert resp.status_code == status and resp.json()["error"]["type"] == error_type
    assert resp.json()["error"]["message"].startswith(f"localapi injected fault ({kind})") or kind == "429"
    assert ("Retry-After" in resp.headers) == (kind == "429")
    assert post("openai", small).status_code == 200
    assert api.stats()["faults"] == {kind: 1} and api.config.script == []


def test_scripted_429_retry_after_is_configurable(api, post, small):
    api.config.retry_after_s = 3
    api.config.script.append("429")
    assert assert_rate_limited(post("openai", small)) == "3"


def test_scripted_502_html(api, post, small):
    api.config.script.append("502html")
    resp = post("openai", small)
    assert resp.status_code == 502 and resp.headers["Content-Type"] == "text/html"
    assert resp.text.startswith("<html>")


def test_scripted_drop(api, post, small):
    api.config.script.append("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        post("openai", small)
    assert post("openai", small).status_code == 200
    stats = api.stats()
    assert stats["dropped"] == 1 and stats["by_status"] == {"200": 1}


def test_scripted_stall(api, post, small):
    api.config.stall_s = 0.3
    api.config.script.extend(["stall", "stall"])
    start = time.monotonic()
    assert post("openai", small).status_code == 200
    assert time.monotonic() - start >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        post("openai", small, timeout=0.1)


def test_scripted_malformed(api, post, small):
    api.config.script.append("malformed")
    resp = post("openai", small)
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    assert resp.text.startswith('{"id": "chatcmpl-localapi-')
    assert api.stats()["ok"] == 0


def test_unknown_script_entry_is_a_500(api, post, small):
    api.config.script.append("teapot")
    resp = post("openai", small)
    assert resp.status_code == 500 and "unknown script entry 'teapot'" in resp.json()["error"]["message"]


def test_random_faults_repeat_with_the_seed(api, post, small):
    api.config.faults, api.config.seed = {"500": 0.4, "503": 0.2}, 7
    first = [post("openai", small).status_code for _ in range(12)]
    api.reset()
    assert [post("openai", small).status_code for _ in range(12)] == first
    assert {200, 500, 503} == set(first)


def test_latency(api, post, small):
    api.config.latency = (0.2, 0.25)
    start = time.monotonic()
    assert post("openai", small).status_code == 200
    assert 0.2 <= time.monotonic() - start < 2


def test_config_and_reset_endpoints(api, client, post, small):
    resp = client.post("/_localapi/config", json={"rpm": 1, "script": ["503"], "latency": [0, 0]})
    assert resp.status_code == 200 and resp.json()["config"]["rpm"] == 1
    assert "api_key" not in resp.json()["config"]
    assert post("openai", small).status_code == 503
    assert_rate_limited(post("openai", small))
    bad = client.post("/_localapi/config", json={"api_key": "x"})
    assert bad.status_code == 400 and "cannot update ['api_key']" in bad.json()["error"]["message"]
    bad = client.post("/_localapi/config", json={"faults": {"500": 2}})
    assert bad.status_code == 400 and "within [0, 1]" in bad.json()["error"]["message"]
    assert client.post("/_localapi/reset").status_code == 200
    assert api.stats()["requests"] == 0 and api.config.rpm == 1  # reset clears stats and windows, keeps limits
    assert post("openai", small).status_code == 200


def test_script_given_at_construction_is_kept(kit, small):
    with LocalAPI(LocalAPIConfig(script=["503"])) as api:
        url = api.url + kit.paths["openai"]
        statuses = [httpx.post(url, json=small, headers={"Authorization": "Bearer t"}, trust_env=False).status_code
                    for _ in range(2)]
    assert statuses == [503, 200]
