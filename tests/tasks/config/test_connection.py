"""The one base of every provider connection: ProviderConfig and GenerationProviderConfig share its fields."""

import httpx
import pytest
from pydantic import ValidationError

from tasks.call.auth import Credentials
from tasks.call.client import ProviderClient
from tasks.config.connection import Connection
from tasks.config.generate import GenerationProviderConfig
from tasks.config.run import ProviderConfig
from tasks.dialects import gdc, trinity

# what GenerationProviderConfig.client_config() handed Credentials, Limiter, retry_policy and ProviderClient
GENERATION_DEFAULTS = {"name": "luma", "token_ttl_s": 3000, "timeout_s": 60, "connect_timeout_s": 10,
                       "max_attempts": 6, "max_retry_time_s": 600, "backoff_initial_s": 1.0, "backoff_max_s": 60.0,
                       "retry_budget_ratio": 0.2, "retry_budget_min": 50, "breaker_failures": 20,
                       "breaker_window_s": 60.0, "quota_error_codes": ["insufficient_quota"]}


def test_both_provider_kinds_are_connections_with_their_own_defaults():
    g = GenerationProviderConfig(base_url="http://luma.test")
    p = ProviderConfig(dialect="openai", base_url="http://x", model="m")
    assert isinstance(g, Connection) and isinstance(p, Connection) and not isinstance(g, ProviderConfig)
    assert {k: getattr(g, k) for k in GENERATION_DEFAULTS} == GENERATION_DEFAULTS
    assert (g.limits.concurrency, g.limits.rpm, g.limits.window) == (8, None, "smooth")
    assert (p.name, p.timeout_s) == ("provider", 120)  # the rest as the generation provider's
    assert {k: getattr(p, k) for k in GENERATION_DEFAULTS if k not in ("name", "timeout_s")} == {
        k: v for k, v in GENERATION_DEFAULTS.items() if k not in ("name", "timeout_s")}
    assert not hasattr(g, "dialect") and not hasattr(g, "model")


def test_the_generation_client_takes_those_defaults_without_a_dialect():
    g = GenerationProviderConfig(base_url="http://luma.test", api_key_env="K")
    client = ProviderClient(g, Credentials(g), transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert client.url is None and client.base_url == "http://luma.test"
    assert (client.retry_budget.ratio, client.retry_budget.minimum) == (0.2, 50)
    assert (client.breaker.failures, client.breaker.window_s) == (20, 60.0)
    assert client._http.timeout == httpx.Timeout(60, connect=10)


def test_either_an_api_key_or_a_token_command_for_every_connection():
    for cls, extra in ((GenerationProviderConfig, {}), (ProviderConfig, {"dialect": "openai", "model": "m"})):
        with pytest.raises(ValidationError, match="set either api_key_env or token_command, not both"):
            cls(base_url="http://x", api_key_env="K", token_command="print-token", **extra)
    assert GenerationProviderConfig(base_url="localapi").embedded
    assert not ProviderConfig(dialect="openai", base_url="http://x", model="m").embedded


def test_media_defaults_and_required_keys_come_from_the_dialect_record():
    t = ProviderConfig(dialect="trinity", base_url="http://x", model="m")
    assert t.media.max_bytes_per_video == trinity.MEDIA_LIMITS["max_bytes_per_video"] == 70 * 1024 * 1024
    assert t.media.mime_types == trinity.MEDIA_LIMITS["mime_types"]
    g = ProviderConfig(dialect="gdc", base_url="https://e:443", model="m", project="P", location="L",
                       media={"max_seconds_audio": 50})
    assert (g.media.max_seconds_audio, g.media.max_seconds_silent) == (50, gdc.MEDIA_LIMITS["max_seconds_silent"])
    assert g.endpoint() == "https://e:443/v1/projects/P/locations/L/chat/completions"
    assert g.endpoint("http://127.0.0.1:9") == "http://127.0.0.1:9/v1/projects/P/locations/L/chat/completions"
    with pytest.raises(ValidationError, match="missing: location"):
        ProviderConfig(dialect="gdc", base_url="https://e:443", model="m", project="P")


def test_an_unknown_dialect_names_the_known_ones():
    with pytest.raises(ValidationError) as e:
        ProviderConfig(dialect="klingon", base_url="http://x", model="m")
    (err,) = e.value.errors()
    assert err["loc"] == ("dialect",) and "unknown dialect 'klingon'" in err["msg"]
    assert "'openai', 'gdc' or 'trinity'" in err["msg"]
