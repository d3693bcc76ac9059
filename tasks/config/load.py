"""Read YAML configs, merge provider profiles, expand ${ENV} references, and name the file and key at fault."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, get_args
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from tasks.config.connection import Connection
from tasks.config.generate import GenerateConfig
from tasks.config.index import IndexRunConfig
from tasks.config.run import RunConfig
from tasks.errors import ConfigError
from tasks.secrets import hold, hold_options, hold_url, strip_userinfo

PROJECT_ROOT = Path(__file__).resolve().parents[2]


SECRET_OPTION_KEYS = {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key",
                      "aws_session_token", "session_token"}


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _locate(loc: tuple) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        ann = next((a for a in get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)), ann)  # X | None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


# top-level keys that belong to another command's config: named in the error when a run meets them
COMMAND_FOR_KEY = {"index": "vidbatch index", "prompts": "vidbatch generate", "images": "vidbatch generate",
                   "poll": "vidbatch generate"}


def _describe(exc: ValidationError, origin_of, model: type[BaseModel] | None = None) -> str:
    model = model or RunConfig
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = f"{origin_of(loc)}: {_locate(loc) or '(top level)'}"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(model, loc))
            hint = COMMAND_FOR_KEY.get(str(loc[0])) if len(loc) == 1 else None
            lines.append(f"{where}: unknown key; allowed keys here: {allowed}"
                         + (f" (a config with `{loc[0]}:` is for `{hint}`)" if hint else ""))
        elif err["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"{where}: {err['msg']}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8): a config is YAML text") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror or type(e).__name__}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    return data


def find_profile(name: str, near: Path) -> Path:
    """The profile file for a name: next to the config, in ./configs/providers, or the project's own."""
    candidates = [near / "providers" / f"{name}.yaml", near / f"{name}.yaml",
                  Path.cwd() / "configs" / "providers" / f"{name}.yaml",
                  PROJECT_ROOT / "configs" / "providers" / f"{name}.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    known = sorted({p.stem for d in (near / "providers", PROJECT_ROOT / "configs" / "providers") if d.is_dir()
                    for p in d.glob("*.yaml")})
    raise ConfigError(f"provider.profile: no profile named {name!r}; known profiles: {', '.join(known) or 'none'}")


def _expand_env(options: dict, where: str) -> dict:
    """Replace ${VAR} in string values from the environment; refuse literal credentials."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, dict):
            out[k] = _expand_env(v, f"{where}.{k}")
            continue
        if k.lower() in SECRET_OPTION_KEYS and isinstance(v, str) and not _ENV_REF.fullmatch(v.strip()):
            raise ConfigError(f"{where}.{k}: credentials never go in config files; write \"${{ENV_VAR}}\" "
                              "or leave it out and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        if isinstance(v, str):
            def sub(m: re.Match, k: str = k) -> str:
                if m.group(1) not in os.environ:
                    raise ConfigError(f"{where}.{k}: environment variable {m.group(1)} is not set")
                return os.environ[m.group(1)]
            v = _ENV_REF.sub(sub, v)
        out[k] = v
    return out


def load_config(path: str | Path, overrides: dict | None = None, check_credentials: bool = True,
                model: type[RunConfig] | None = None) -> RunConfig:
    """Read, merge and validate a run config; raise ConfigError naming the file and key path."""
    path = Path(path)
    raw = _read_yaml(path)
    provider_raw = raw.get("provider")
    profile_path = None
    if isinstance(provider_raw, dict) and "profile" in provider_raw:
        provider_raw = dict(provider_raw)
        name = provider_raw.pop("profile")
        profile_path = find_profile(str(name), path.parent)
        merged = _read_yaml(profile_path)
        merged.setdefault("name", str(name))
        for k, v in provider_raw.items():
            merged[k] = {**merged[k], **v} if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        raw = {**raw, "provider": merged}
    for key, value in (overrides or {}).items():
        section, _, leaf = key.partition(".")
        raw.setdefault(section, {})[leaf] = value

    own_provider_keys = set(provider_raw) if isinstance(provider_raw, dict) else set()

    def origin_of(loc: tuple) -> str:
        if profile_path and loc and loc[0] == "provider" and (len(loc) < 2 or loc[1] not in own_provider_keys):
            return f"{path} (provider profile {profile_path})"
        return str(path)

    try:
        cfg = (model or RunConfig).model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, origin_of, model)) from None
    src, out, prov = cfg.source, cfg.output, cfg.provider
    cfg = cfg.model_copy(update={
        "source": src.model_copy(update=_userinfo_to_options(_expand_env(
            {"url": src.url, "storage_options": src.storage_options}, f"{path}: source"))),
        "output": out.model_copy(update=_userinfo_to_options(_expand_env(
            {"url": out.url, "storage_options": out.storage_options}, f"{path}: output"))),
        "provider": prov.model_copy(update=_expand_env({"base_url": prov.base_url,
                                                        "public_base_url": prov.public_base_url}, f"{path}: provider")),
    })
    hold_config_secrets(cfg.provider, cfg.source.url, cfg.source.storage_options, cfg.output.url,
                        cfg.output.storage_options, cfg.media.scratch_url, cfg.media.scratch_storage_options or {},
                        cfg.provider.base_url)
    if check_credentials:
        check_provider_credentials(cfg.provider, str(path))
    return cfg


def _userinfo_to_options(section: dict) -> dict:
    """`s3://KEY:SECRET@bucket/...`: the credentials move to storage_options (key, secret) and leave the URL, so no
    object URI, message, row or Prefect parameter carries them; both are held for redaction whatever the scheme."""
    url = section.get("url")
    if not isinstance(url, str):
        return section
    hold_url(url)
    clean = strip_userinfo(url)
    if clean == url or urlsplit(url).scheme not in ("s3", "s3a"):
        return section
    parts = urlsplit(url)
    options = dict(section.get("storage_options") or {})
    options.setdefault("key", unquote(parts.username or ""))
    if parts.password is not None:
        options.setdefault("secret", unquote(parts.password))
    return {**section, "url": clean, "storage_options": options}


def hold_config_secrets(provider: Connection, *values: Any) -> None:
    """Register every credential a config carries (storage options, `user:password@` in URLs, a key pasted into
    api_key_env) for redaction."""
    if provider.api_key_env and provider.api_key_env_shown != provider.api_key_env:
        hold(provider.api_key_env)
    for v in values:
        if isinstance(v, dict):
            hold_options(v)
        elif isinstance(v, str):
            hold_url(v)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_provider_credentials(p: Connection, where: str = "config") -> None:
    """Fail before any call when the credential the provider needs is missing."""
    if p.embedded:
        return
    if p.api_key_env:
        if not _ENV_NAME.fullmatch(p.api_key_env):
            raise ConfigError(f"{where}: provider.api_key_env must be the NAME of an environment variable (letters, "
                              "digits and _), not the key itself; its value is not shown. Export the key, e.g. "
                              "`export MY_PROVIDER_KEY=...`, and set api_key_env: MY_PROVIDER_KEY")
        if not os.environ.get(p.api_key_env):
            raise ConfigError(f"{where}: provider.api_key_env: environment variable {p.api_key_env_shown} is not set "
                              f"or empty; export it with the API key of provider {p.name!r}")
    elif not p.token_command:
        raise ConfigError(f"{where}: provider: no credential configured; set api_key_env (the name of an "
                          "environment variable holding the key) or token_command (a command printing a token)")


def load_generate_config(path: str | Path, check_credentials: bool = True) -> GenerateConfig:
    """Read and validate a generation config; raise ConfigError naming the file and key path."""
    path = Path(path)
    try:
        cfg = GenerateConfig.model_validate(_read_yaml(path))
    except ValidationError as e:
        raise ConfigError(_describe(e, lambda loc: str(path), GenerateConfig)) from None
    pr, im, out = cfg.prompts, cfg.images, cfg.output
    cfg = cfg.model_copy(update={
        "prompts": pr.model_copy(update=_expand_env({"url": pr.url, "storage_options": pr.storage_options},
                                                    f"{path}: prompts")),
        "images": im.model_copy(update=_expand_env({"storage_options": im.storage_options}, f"{path}: images")),
        "output": out.model_copy(update=_expand_env({"url": out.url, "storage_options": out.storage_options},
                                                    f"{path}: output")),
        "provider": cfg.provider.model_copy(update=_expand_env({"base_url": cfg.provider.base_url},
                                                               f"{path}: provider")),
    })
    hold_config_secrets(cfg.provider, cfg.prompts.url, cfg.prompts.storage_options, cfg.images.storage_options,
                        cfg.output.url, cfg.output.storage_options, cfg.provider.base_url)
    if check_credentials:
        check_provider_credentials(cfg.provider, str(path))
    return cfg


def load_index_config(path: str | Path, check_credentials: bool = True) -> IndexRunConfig:
    """Read and validate an index config; raise ConfigError naming the file and key path."""
    cfg = load_config(path, check_credentials=check_credentials, model=IndexRunConfig)
    assert isinstance(cfg, IndexRunConfig)  # validated as the model it was given
    return cfg
