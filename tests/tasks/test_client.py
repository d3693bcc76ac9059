import asyncio
import json
import sys
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tasks.client import Credentials, ProviderClient, parse_retry_after
from tasks.config import ProviderConfig
from tasks.errors import AuthError, BadRequestError, ConfigError, RateLimitedError, ServerError, TransportError, redact

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
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    result, sleeps, _ = run(provider(), [httpx.Response(429, headers={"Retry-After": "7"}),
                                         httpx.Response(429, headers={"Retry-After": when}),
                                         httpx.Response(200, json=OK)])
    assert result.error is None and result.attempts == 3
    assert sleeps[0] == 7.0 and 28 <= sleeps[1] <= 30


def test_5xx_timeouts_and_drops_retried_with_exponential_backoff():
    result, sleeps, _ = run(provider(), [httpx.Response(500), httpx.Response(502, text="<html><h1>Bad gateway</h1></html>"),
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
