"""Prices and budgets in provider profiles: validated at their key; shipped profiles carry no made-up number."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tasks.config.load import load_config
from tasks.config.prices import Prices, TokenCounts
from tasks.errors import ConfigError

BASE = """
job: t
source: {url: /data/videos}
provider:
  profile: localapi-openai
  PROVIDER
prompt: {user: Summarize., params: {max_tokens: 100}}
output: {url: /tmp/ledger}
"""
PRICES = "prices: {currency: XTS, per_million: {text: 1.0, video: 1.0, audio: 2.0, cached: 0.25, output: 4.0}}"


def load(tmp_path, provider: str):
    p = tmp_path / "run.yaml"
    p.write_text(textwrap.dedent(BASE).replace("PROVIDER", provider))
    return load_config(p)


def error(tmp_path, provider: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, provider)
    return str(e.value)


def test_prices_load_and_cost_is_exact(tmp_path):
    prices = load(tmp_path, PRICES).provider.prices
    assert prices is not None and prices.currency == "XTS"
    cost = prices.cost(TokenCounts(text=7, video=1_000_003, audio=64, cached=10, output=33))
    assert cost == Decimal("1.0000100") + Decimal("0.000128") + Decimal("0.0000025") + Decimal("0.000132")


@pytest.mark.parametrize("bad,expected", [
    ("{currency: XTS, per_million: {text: -0.5}}", "provider.prices.per_million.text: Input should be greater"),
    ("{currency: XTS, per_million: {audio: cheap}}", "provider.prices.per_million.audio"),
    ('{currency: XTS, per_million: {audio: "0.30"}}', "provider.prices.per_million.audio"),
    ("{currency: XTS, per_million: {image: 1.0}}", "provider.prices.per_million.image: unknown key; allowed keys "
                                                   "here: text, video, audio, cached, output"),
])
def test_a_bad_price_is_a_config_error_naming_the_field(tmp_path, bad, expected):
    assert expected in error(tmp_path, f"prices: {bad}")


def test_a_budget_needs_prices_and_a_bound_on_output(tmp_path):
    assert "provider.budget: provider 'localapi-openai' has no prices" in error(tmp_path, "budget: {per_run: 5}")
    text = textwrap.dedent(BASE).replace("PROVIDER", PRICES + "\n  budget: {per_day: 5}").replace(
        ", params: {max_tokens: 100}", "")
    p = tmp_path / "nomax.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="set prompt.params.max_tokens or provider.budget.output_tokens"):
        load_config(p)
    assert "unknown time zone 'Mars/Olympus'" in error(tmp_path, PRICES + "\n  budget: {per_day: 5, "
                                                                            "time_zone: Mars/Olympus}")
    assert "provider.budget.per_run" in error(tmp_path, PRICES + "\n  budget: {per_run: -1}")


def test_shipped_profiles_carry_no_price_the_provider_documents_do_not_state():
    """The seeds (the provider documents this project follows) state no price: every shipped profile says null."""
    seeds = Path("/work/shared/seeds")
    if seeds.is_dir():
        text = " ".join(p.read_text() for p in seeds.glob("*.txt")).lower()
        assert not any(w in text for w in ("per million", "harga", "价格", "가격", "usd"))
    profiles = sorted((Path(__file__).resolve().parents[3] / "configs" / "providers").glob("*.yaml"))
    assert len(profiles) >= 8
    for p in profiles:
        data = yaml.safe_load(p.read_text())
        assert "prices" in data and data["prices"] is None, p.name
    assert Prices.model_validate({"currency": "XTS", "per_million": {}}).cost(TokenCounts(text=5)) is None
