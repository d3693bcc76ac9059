import textwrap

import pytest

from tasks.config.load import load_config
from tasks.config.run import parse_when
from tasks.errors import ConfigError

BASE = """
job: t
source: {url: /data/videos, include: ["**/*.mp4"]}
provider: {profile: localapi-openai}
prompt: {user: Summarize.}
output: {url: /tmp/ledger}
"""


def write(tmp_path, text, name="run.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_profile_merge_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.provider.dialect == "openai" and cfg.provider.embedded and cfg.provider.name == "localapi-openai"
    assert cfg.provider.limits.rpm == 600 and cfg.output.batch_size == 200
    assert "mp4" in cfg.source.extensions and "3gp" in cfg.source.extensions


def test_run_config_overrides_profile_keys_and_nested_limits(tmp_path):
    cfg = load_config(write(tmp_path, BASE.replace("{profile: localapi-openai}",
                                                   "{profile: localapi-openai, limits: {concurrency: 3}}")))
    assert cfg.provider.limits.concurrency == 3 and cfg.provider.limits.rpm == 600


def test_unknown_key_names_file_path_and_allowed_keys(tmp_path):
    p = write(tmp_path, BASE.replace("include:", "inclde:"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "source.inclde: unknown key" in msg and "include" in msg and "storage_options" in msg


def test_an_index_config_given_to_run_names_the_command_it_is_for(tmp_path):
    p = write(tmp_path, BASE + "index: {kind: lectures}\n")
    with pytest.raises(ConfigError, match=r"index: unknown key; .*\(a config with `index:` is for `vidbatch index`\)"):
        load_config(p)


def test_wrong_type_and_bad_choice(tmp_path):
    p = write(tmp_path, BASE.replace("{profile: localapi-openai}",
                                     "{profile: localapi-openai, limits: {rpm: lots}, delivery: carrier-pigeon}"))
    msg = str(pytest.raises(ConfigError, load_config, p).value)
    assert "provider.limits.rpm" in msg and "'lots'" in msg
    assert "provider.delivery" in msg and "'inline'" in msg and "'presigned'" in msg


def test_profile_key_error_names_the_profile_file(tmp_path):
    (tmp_path / "providers").mkdir()
    (tmp_path / "providers" / "mine.yaml").write_text("dialect: klingon\nbase_url: http://x\nmodel: m\n")
    msg = str(pytest.raises(ConfigError, load_config, write(tmp_path, BASE.replace("localapi-openai", "mine"))).value)
    assert "mine.yaml" in msg and "provider.dialect" in msg and "'openai', 'gdc' or 'trinity'" in msg


def test_missing_credential_variable_fails_before_any_call(tmp_path, monkeypatch):
    monkeypatch.delenv("LUNOS_API_KEY", raising=False)
    p = write(tmp_path, BASE.replace("localapi-openai", "lunos"))
    msg = str(pytest.raises(ConfigError, load_config, p).value)
    assert "provider.api_key_env" in msg and "LUNOS_API_KEY" in msg
    monkeypatch.setenv("LUNOS_API_KEY", "sk-test")
    assert load_config(p).provider.api_key_env == "LUNOS_API_KEY"


def test_gdc_needs_project_and_location(tmp_path, monkeypatch):
    p = write(tmp_path, BASE.replace("{profile: localapi-openai}", "{profile: gdc, base_url: 'https://e:443'}"))
    msg = str(pytest.raises(ConfigError, load_config, p).value)
    assert "project and location" in msg


def test_a_gdc_profile_without_project_names_the_missing_keys(tmp_path):
    p = write(tmp_path, BASE.replace("{profile: localapi-openai}",
                                     "{profile: gdc, base_url: 'https://e:443', location: europe-west4}"))
    msg = str(pytest.raises(ConfigError, load_config, p, check_credentials=False).value)
    assert f"{p} (provider profile " in msg and "missing: project" in msg and "missing: project," not in msg
    p = write(tmp_path, BASE.replace("{profile: localapi-openai}", "{profile: gdc, base_url: 'https://e:443'}"))
    assert "missing: project, location" in str(pytest.raises(ConfigError, load_config, p).value)


def test_an_unknown_dialect_in_a_profile_names_the_known_ones(tmp_path):
    (tmp_path / "providers").mkdir()
    (tmp_path / "providers" / "mine.yaml").write_text("dialect: klingon\nbase_url: http://x\nmodel: m\n")
    msg = str(pytest.raises(ConfigError, load_config, write(tmp_path, BASE.replace("localapi-openai", "mine"))).value)
    assert "provider.dialect: Value error, unknown dialect 'klingon'; use one of the known dialects: 'openai', " \
           "'gdc' or 'trinity' (got 'klingon')" in msg


def test_literal_secret_in_storage_options_refused_env_reference_expanded(tmp_path, monkeypatch):
    p = write(tmp_path, BASE.replace("include:", "storage_options: {secret: hunter2}, include:"))
    assert "credentials never go in config files" in str(pytest.raises(ConfigError, load_config, p).value)
    monkeypatch.setenv("MY_SECRET", "s3cr3t")
    p = write(tmp_path, BASE.replace("include:", "storage_options: {secret: '${MY_SECRET}'}, include:"))
    assert load_config(p).source.storage_options == {"secret": "s3cr3t"}
    monkeypatch.delenv("MY_SECRET")
    assert "MY_SECRET is not set" in str(pytest.raises(ConfigError, load_config, p).value)


def test_unknown_profile_lists_known_ones(tmp_path):
    msg = str(pytest.raises(ConfigError, load_config, write(tmp_path, BASE.replace("localapi-openai", "nope"))).value)
    assert "no profile named 'nope'" in msg and "localapi-gdc" in msg


def test_not_yaml_and_not_a_mapping(tmp_path):
    assert "not valid YAML" in str(pytest.raises(ConfigError, load_config, write(tmp_path, "a: [b")).value)
    assert "must be a mapping" in str(pytest.raises(ConfigError, load_config, write(tmp_path, "- a\n")).value)
    assert "file not found" in str(pytest.raises(ConfigError, load_config, tmp_path / "none.yaml").value)


def test_parse_when():
    assert parse_when("2026-11-21").isoformat() == "2026-11-21T00:00:00+00:00"
    assert "not a date" in str(pytest.raises(ConfigError, parse_when, "yesterday").value)


@pytest.mark.parametrize("name", ["demo.yaml", "nightly-gdc.yaml"])
def test_shipped_configs_validate(name, monkeypatch):
    from tasks.config.load import PROJECT_ROOT
    load_config(PROJECT_ROOT / "configs" / name, check_credentials=False)


def test_pacing_retry_and_breaker_keys(tmp_path):
    cfg = load_config(write(tmp_path, BASE.replace("{profile: localapi-openai}", """
        {profile: localapi-openai, limits: {window: sliding, margin_s: 0.5, ramp_s: 0},
         retry_budget_ratio: 0.1, retry_budget_min: 5, breaker_failures: null, quota_error_codes: [quota_gone]}""")))
    p = cfg.provider
    assert (p.limits.window, p.limits.margin_s, p.limits.ramp_s) == ("sliding", 0.5, 0)
    assert (p.retry_budget_ratio, p.retry_budget_min, p.breaker_failures, p.quota_error_codes) == (0.1, 5, None,
                                                                                                  ["quota_gone"])
    defaults = load_config(write(tmp_path, BASE, "defaults.yaml")).provider
    assert defaults.limits.window == "smooth" and defaults.breaker_failures == 20
    assert defaults.quota_error_codes == ["insufficient_quota"]
    bad = write(tmp_path, BASE.replace("{profile: localapi-openai}",
                                       "{profile: localapi-openai, limits: {window: fixed, margin_s: -1}}"), "bad.yaml")
    msg = str(pytest.raises(ConfigError, load_config, bad).value)
    assert "provider.limits.window" in msg and "'smooth' or 'sliding'" in msg and "provider.limits.margin_s" in msg


def test_a_directory_or_a_binary_file_is_a_config_error_naming_it(tmp_path):
    from tasks.config.load import load_config, load_generate_config

    binary = tmp_path / "clip.yaml"
    binary.write_bytes(b"\x00\x00\x00\x18ftypmp42\xff\xfe\x80" * 10)
    for load in (load_config, load_generate_config):
        with pytest.raises(ConfigError, match=f"{tmp_path}: is a directory"):
            load(tmp_path)
        with pytest.raises(ConfigError, match=f"{binary}: not a text file"):
            load(binary)


def test_api_key_env_holding_a_literal_key_is_never_printed(tmp_path, monkeypatch):
    from tasks.config.load import load_config

    path = tmp_path / "run.yaml"
    for literal in ("sk-proj-LITERAL-abc123", "AIzaSyLiteralKeyLiteralKey0123"):
        path.write_text(f"""job: j
source: {{url: {tmp_path}}}
provider: {{dialect: openai, model: m, base_url: "http://127.0.0.1:9/v1", api_key_env: {literal}}}
prompt: {{user: hi}}
output: {{url: {tmp_path}/out}}
""")
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert literal not in str(e.value) and "api_key_env" in str(e.value)
