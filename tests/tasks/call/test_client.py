import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from tasks.call.auth import Credentials
from tasks.call.client import ProviderClient
from tasks.call.provider import localapi_base_url, localapi_prefix
from tasks.call.responses import parse_duration, parse_retry_after, rate_limit_headers
from tasks.call.retry import CircuitBreaker, RetryBudget
from tasks.config.connection import Connection
from tasks.config.run import ProviderConfig
from tasks.errors import (
    AuthError,
    BadRequestError,
    ConfigError,
    NotAttemptedError,
    QuotaExhaustedError,
    ServerError,
    TransportError,
    redact,
)

OK = {"id": "r1", "choices": [{"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}


def provider(**kw):
    base = dict(dialect="openai", base_url="http://provider.test/v1", model="m", api_key_env="TEST_KEY",
                max_attempts=5, backoff_initial_s=1, backoff_max_s=8)
    base.update(kw)
    return ProviderConfig(**base)


def scripted(responses, seen):
    """A MockTransport answering from a list; each item is a Response factory or an exception."""
    it = iter(responses)

    def handler(request):
        seen.append(request)
        r = next(it)
        if isinstance(r, Exception):
            raise r
        return r

    return httpx.MockTransport(handler)


def run(p, responses, creds=None):
    sleeps, seen, now = [], [], [0.0]

    async def sleep(s):  # a fake clock: sleeping advances it
        sleeps.append(s)
        now[0] += s

    async def main():
        async with ProviderClient(p, creds or Credentials(p), transport=scripted(responses, seen), sleep=sleep,
                                  clock=lambda: now[0]) as c:
            return await c.send({"model": "m", "messages": []}, 100, "key-1")

    return asyncio.run(main()), sleeps, seen


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-secret-123")


def test_success_sends_auth_key_header_and_json():
    result, sleeps, seen = run(provider(), [httpx.Response(200, json=OK)])
    assert result.error is None and result.attempts == 1 and result.completion.text == "fine"
    req = seen[0]
    assert req.url == "http://provider.test/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-secret-123" and req.headers["x-request-key"] == "key-1"
    assert json.loads(req.content)["model"] == "m" and sleeps == []


def test_retry_after_seconds_then_http_date_are_honoured_exactly():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    result, sleeps, _ = run(provider(), [httpx.Response(429, headers={"Retry-After": "7"}),
                                         httpx.Response(429, headers={"Retry-After": when}),
                                         httpx.Response(200, json=OK)])
    assert result.error is None and result.attempts == 3
    assert sleeps[0] == 7.0 and 28 <= sleeps[1] <= 30


def test_5xx_timeouts_and_drops_retried_with_exponential_backoff():
    result, sleeps, _ = run(provider(), [httpx.Response(500),
                                         httpx.Response(502, text="<html><h1>Bad gateway</h1></html>"),
                                         httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped"),
                                         httpx.Response(200, json=OK)])
    assert result.error is None and result.attempts == 5
    # wait_exponential_jitter: 1, 2, 4, 8 (+ up to 1 s of jitter each)
    assert [int(s) for s in sleeps] == [1, 2, 4, 8]


def test_attempts_are_bounded_and_the_last_error_is_kept():
    result, sleeps, seen = run(provider(max_attempts=3), [httpx.Response(503, json={"error": {"message": "busy"}})] * 3)
    assert isinstance(result.error, ServerError) and result.attempts == 3 and len(seen) == 3
    assert result.error.http_status == 503 and "busy" in str(result.error)


@pytest.mark.parametrize("status,cls", [(400, BadRequestError), (401, AuthError), (403, AuthError),
                                        (404, BadRequestError)])
def test_client_errors_are_not_retried_and_carry_the_provider_message(status, cls):
    body = {"error": {"message": f"nope {status}", "type": "invalid_request_error"}}
    result, sleeps, seen = run(provider(), [httpx.Response(status, json=body)])
    assert isinstance(result.error, cls) and result.attempts == 1 and len(seen) == 1 and sleeps == []
    assert str(result.error) == f"nope {status}" and result.error.http_status == status


def test_malformed_json_and_non_completion_are_retried():
    result, _, _ = run(provider(), [httpx.Response(200, text='{"choices": [{"mess'), httpx.Response(200, json={"x": 1}),
                                    httpx.Response(200, json=OK)])
    assert result.error is None and result.attempts == 3


def test_connection_refused_ends_as_transport_error():
    result, _, _ = run(provider(max_attempts=2), [httpx.ConnectError("refused")] * 2)
    assert isinstance(result.error, TransportError) and result.attempts == 2


def test_token_command_runs_once_is_cached_and_refreshed_once_on_401(tmp_path):
    counter = tmp_path / "n"
    script = tmp_path / "tok.py"
    script.write_text(f"import pathlib; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) + 1 "
                      "if p.exists() else 1; p.write_text(str(n)); print(f'tok-{n}')")
    p = provider(api_key_env=None, token_command=f"{sys.executable} {script}")
    creds = Credentials(p)
    result, _, seen = run(p, [httpx.Response(401, json={"error": {"message": "expired"}}),
                              httpx.Response(200, json=OK)], creds)
    assert result.error is None and result.attempts == 2
    assert [r.headers["authorization"] for r in seen] == ["Bearer tok-1", "Bearer tok-2"]
    result, _, seen = run(p, [httpx.Response(401, json={"error": {"message": "no"}})] * 2, creds)
    assert isinstance(result.error, AuthError) and result.attempts == 2  # refreshed once, then given up


def test_failing_token_command_is_a_config_error():
    creds = Credentials(provider(api_key_env=None, token_command=f"{sys.executable} -c 'import sys; sys.exit(3)'"))
    with pytest.raises(ConfigError, match="exited 3"):
        creds.header()


def test_parse_retry_after_forms():
    assert parse_retry_after("12") == 12.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=0) > 1e9


def test_redact_strips_payloads_signatures_and_tokens():
    text = ("bad data:video/mp4;base64,AAAAIGZ0eXBpc29tAAACAGlzb21pc28y at "
            "http://h/b/k.mp4?X-Amz-Signature=abcdef123&X-Amz-Credential=AKIA%2F and Bearer sk-secret-123")
    out = redact(text)
    assert "AAAAIGZ0" not in out and "abcdef123" not in out and "sk-secret-123" not in out and "AKIA" not in out
    assert "data:video/mp4;base64,<redacted>" in out


# -- reacting to the provider: pauses, retry delays, quotas, headers, budget, breaker ---------------------

def client_with(p, handler, **kw):
    """A ProviderClient over a MockTransport `handler`, on a fake clock that sleeping advances."""
    now, sleeps = [0.0], []

    async def sleep(s):
        sleeps.append(round(s, 6))
        now[0] += s

    c = ProviderClient(p, Credentials(p), transport=httpx.MockTransport(handler), sleep=sleep,
                       clock=lambda: now[0], **kw)
    return c, sleeps, now


def send_all(c, n):
    async def main():
        async with c:
            return [await c.send({"model": "m", "messages": []}, 100, f"key-{i}") for i in range(n)]

    return asyncio.run(main())


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}


def test_429_pauses_the_whole_client_for_retry_after():
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json=OK)])
    c, sleeps, now = client_with(provider(), lambda r: next(answers))
    [result] = send_all(c, 1)
    assert result.error is None and result.attempts == 2
    assert c.limiter.paused_until == 7.0 and sleeps == [7.0]


def test_retry_delay_from_a_google_error_body_when_no_header():
    body = [{"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED",
                       "details": [{"@type": "type.googleapis.com/google.rpc.Help"}, RETRY_INFO]}}]
    answers = iter([httpx.Response(429, json=body), httpx.Response(200, json=OK)])
    c, sleeps, now = client_with(provider(), lambda r: next(answers))
    [result] = send_all(c, 1)
    assert result.error is None and sleeps == [12.0] and c.limiter.paused_until == 12.0


def test_retry_after_header_wins_over_the_body():
    body = {"error": {"message": "slow down", "details": [RETRY_INFO]}}
    answers = iter([httpx.Response(429, json=body, headers={"Retry-After": "3"}), httpx.Response(200, json=OK)])
    c, sleeps, _ = client_with(provider(), lambda r: next(answers))
    send_all(c, 1)
    assert sleeps == [3.0]


def test_503_retry_after_is_honoured_for_that_item_only():
    answers = iter([httpx.Response(503, headers={"Retry-After": "4"}), httpx.Response(200, json=OK)])
    c, sleeps, _ = client_with(provider(), lambda r: next(answers))
    [result] = send_all(c, 1)
    assert result.error is None and sleeps == [4.0] and c.limiter.paused_until == float("-inf")


QUOTA = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                   "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}


def test_exhausted_quota_fails_fast_and_stops_the_run():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(429, json=QUOTA, headers={"Retry-After": "20"})

    c, sleeps, _ = client_with(provider(), handler)
    first, second, third = send_all(c, 3)
    assert isinstance(first.error, QuotaExhaustedError) and first.error.kind == "quota_exhausted"
    assert first.attempts == 1 and sleeps == [] and len(seen) == 1
    for later in (second, third):
        assert isinstance(later.error, NotAttemptedError) and later.attempts == 0
        assert "quota is exhausted" in str(later.error)


def test_quota_is_read_from_the_body_fields_never_from_the_message():
    words = {"error": {"message": "insufficient_quota? no, just busy", "type": "rate_limit_error", "code": "rate"}}
    answers = iter([httpx.Response(429, json=words), httpx.Response(200, json=OK)])
    c, _, _ = client_with(provider(), lambda r: next(answers))
    assert send_all(c, 1)[0].error is None
    gemini_daily = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "per day quota"}}
    c, _, _ = client_with(provider(quota_error_codes=["RESOURCE_EXHAUSTED_DAILY"]),
                          lambda r: httpx.Response(429, json={"error": {**gemini_daily["error"],
                                                                          "code": "RESOURCE_EXHAUSTED_DAILY"}}))
    assert isinstance(send_all(c, 1)[0].error, QuotaExhaustedError)  # a profile names its provider's quota code


def test_rate_limit_headers_are_parsed_in_every_form():
    h = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "3",
         "x-ratelimit-reset-requests": "1m30.5s", "x-ratelimit-limit-tokens": "90000",
         "x-ratelimit-remaining-tokens": "1200", "x-ratelimit-reset-tokens": "120ms"}
    assert rate_limit_headers(h) == {"requests": (3.0, 90.5, 600.0), "tokens": (1200.0, 0.12, 90000.0)}
    generic = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "17"}
    assert rate_limit_headers(generic) == {"requests": (0.0, 17.0, None)}
    assert rate_limit_headers({"x-ratelimit-remaining": "5"}) == {}  # no reset: nothing to steer by
    assert parse_duration("6m0s") == 360 and parse_duration("0.5") == 0.5 and parse_duration("soon") is None
    assert 9 <= parse_duration(str(time.time() + 10)) <= 10  # a Unix time


def test_remaining_zero_holds_the_next_start_until_the_reset():
    answers = iter([httpx.Response(200, json=OK, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "30"}),
                    httpx.Response(200, json=OK)])
    c, sleeps, now = client_with(provider(), lambda r: next(answers))
    send_all(c, 2)
    assert sleeps == [30.0]


def test_retry_budget_arithmetic():
    b = RetryBudget(ratio=0.5, minimum=1)
    assert b.spend() and not b.spend()        # the minimum, then nothing before any first attempt
    for _ in range(4):
        b.first()
    assert [b.spend() for _ in range(3)] == [True, True, False]  # 1 + 0.5 * 4 = 3 retries in all
    assert (b.retries, b.refused) == (3, 2)


def test_retries_draw_from_one_budget_for_the_whole_run():
    seen = []

    def handler(request):
        seen.append(request.headers["x-request-key"])
        return httpx.Response(503, json={"error": {"message": "busy"}})

    c, _, _ = client_with(provider(max_attempts=5, retry_budget_ratio=0, retry_budget_min=3, breaker_failures=None),
                          handler)
    first, second = send_all(c, 2)
    assert first.attempts == 4 and second.attempts == 1   # 3 retries in all, spent by the first item
    assert seen == ["key-0"] * 4 + ["key-1"]
    assert "retry budget is spent" in str(first.error) and isinstance(first.error, ServerError)
    assert first.error.http_status == 503


def test_circuit_breaker_opens_after_failures_in_a_row_and_stops_sending():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(502, text="<html><h1>Bad gateway</h1></html>")

    c, _, _ = client_with(provider(max_attempts=4, breaker_failures=6, breaker_window_s=0), handler)
    results = send_all(c, 4)
    assert [r.attempts for r in results] == [4, 2, 0, 0] and len(seen) == 6
    assert isinstance(results[0].error, ServerError)          # its attempts ran out before the breaker opened
    for r in results[1:]:                                     # cut short or never sent: the next run sends them
        assert r.error.kind == "not_attempted" and "6 failed attempts in a row" in str(r.error)
        assert "Bad gateway" in str(r.error)
    assert "its last attempt: ServerError" in str(results[1].error) and results[1].error.http_status == 502


def test_circuit_breaker_needs_the_failures_to_last_and_a_success_resets_it():
    clock = [0.0]
    b = CircuitBreaker(failures=3, window_s=60, clock=lambda: clock[0])
    for t in (0, 1, 2, 3):
        clock[0] = t
        b.failure(ServerError("x"))
    assert not b.open                          # four in a row, but within 3 s: a blip
    b.success()
    for t in (10, 40, 69):
        clock[0] = t
        b.failure(ServerError("x"))
    assert not b.open                          # 59 s since the streak began
    clock[0] = 71
    b.failure(TransportError("refused"))
    assert b.open and "4 failed attempts in a row over 61 s" in b.reason


def test_429s_and_bad_requests_do_not_count_towards_the_breaker():
    answers = iter([httpx.Response(429, headers={"Retry-After": "1"})] * 3 + [httpx.Response(200, json=OK)]
                   + [httpx.Response(400, json={"error": {"message": "bad"}})] * 3)
    c, _, _ = client_with(provider(breaker_failures=2, breaker_window_s=0), lambda r: next(answers))
    results = send_all(c, 4)
    assert results[0].error is None and results[0].attempts == 4
    assert [r.error.kind for r in results[1:]] == ["bad_request"] * 3 and not c.breaker.open


@pytest.mark.parametrize("answer,kind", [
    (httpx.Response(500), "server"), (httpx.Response(504, text="upstream timed out"), "server"),
    (httpx.Response(502, text="<html><body><h1>502 Bad Gateway</h1></body></html>"), "server"),
    (httpx.Response(200, text="<html>maintenance</html>"), "malformed_response"),
    (httpx.Response(200, json={"choices": []}), "malformed_response"),
    (httpx.ReadTimeout("stalled"), "transport"), (httpx.RemoteProtocolError("peer closed"), "transport"),
    (httpx.ReadError("reset"), "transport"), (httpx.DecodingError("bad gzip"), "malformed_response"),
])
def test_every_fault_is_classified_by_type_at_the_boundary(answer, kind):
    result, _, _ = run(provider(max_attempts=1), [answer])
    assert result.error.kind == kind and result.attempts == 1


# -- any Connection: the endpoint from the dialect, or none -----------------------------------------------------


def test_send_posts_to_the_dialects_endpoint_on_an_embedded_base_url():
    p = provider(dialect="gdc", base_url="https://gdc.test:443", project="P", location="L")
    seen = []

    async def main():
        async with ProviderClient(p, Credentials(p, token="t"), base_url="http://127.0.0.1:9",
                                  transport=scripted([httpx.Response(200, json=OK)], seen)) as c:
            assert c.base_url == "http://127.0.0.1:9"
            return await c.send({"model_id": "m", "messages": []}, 1, "k")

    assert asyncio.run(main()).error is None
    assert seen[0].url == "http://127.0.0.1:9/v1/projects/P/locations/L/chat/completions"


def test_a_plain_connection_sends_only_to_an_endpoint_it_is_given():
    conn = Connection(name="other", base_url="http://other.test", api_key_env="TEST_KEY", max_attempts=1)
    seen = []

    async def main(endpoint=None):
        async with ProviderClient(conn, Credentials(conn), transport=scripted([httpx.Response(200, json=OK)], seen),
                                  endpoint=endpoint) as c:
            return await c.send({"messages": []}, 1, "k")

    with pytest.raises(TypeError, match="provider 'other' has no chat/completions endpoint"):
        asyncio.run(main())
    assert asyncio.run(main("http://other.test/v9/complete")).completion.text == "fine"
    assert seen[0].url == "http://other.test/v9/complete"


def test_where_each_connection_lives_on_a_localapi_server():
    from tasks.config.generate import GenerationProviderConfig

    assert [localapi_prefix(provider(dialect=d, project="P", location="L")) for d in ("openai", "gdc", "trinity")] \
        == ["/v1", "", "/trinity/v1"]
    assert localapi_prefix(GenerationProviderConfig(base_url="localapi")) == ""
    assert localapi_base_url("http://127.0.0.1:7/", "trinity") == "http://127.0.0.1:7/trinity/v1"
    with pytest.raises(ConfigError, match="unknown dialect 'x'"):
        localapi_base_url("http://127.0.0.1:7", "x")


@pytest.mark.parametrize("profile,prefix,path", [
    ("localapi-trinity", "/trinity/v1", "/trinity/v1/chat/completions"),
    ("localapi-gdc", "", "/v1/projects/demo-project/locations/demo-location/chat/completions"),
])
def test_open_provider_starts_a_localapi_where_the_dialect_lives(tmp_path, profile, prefix, path):
    from tasks.call.provider import open_provider
    from tasks.config.load import load_config

    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(f"source: {{url: {tmp_path}}}\nprovider: {{profile: {profile}}}\nprompt: {{user: x}}\n"
                        f"output: {{url: {tmp_path / 'out'}}}\n")
    cfg = load_config(run_yaml)

    async def main():
        async with open_provider(cfg) as c:
            root = c.base_url.removesuffix(prefix)
            assert root.startswith("http://127.0.0.1:") and root.rsplit(":", 1)[1].isdigit()
            return c.url, root, c.credentials.header()["Authorization"]

    url, root, auth = asyncio.run(main())
    assert url == root + path and auth.startswith("Bearer vb-local-")
