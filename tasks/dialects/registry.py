"""The known dialects by name, and the payload, endpoint and MIME names of a request in one of them."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from tasks.dialects.base import Dialect, VideoRef
from tasks.errors import ConfigError

# A new dialect: its module tasks/dialects/<name>.py defining DIALECT, and its name on this line (in error order).
NAMES = ("openai", "gdc", "trinity")


def _load(name: str) -> Dialect:
    record = getattr(import_module(f"tasks.dialects.{name}"), "DIALECT", None)
    if not isinstance(record, Dialect) or record.name != name:
        raise ImportError(f"tasks/dialects/{name}.py must define DIALECT = Dialect({name!r}, ...)")
    return record


DIALECTS: dict[str, Dialect] = {name: _load(name) for name in NAMES}


class UnknownDialectError(ConfigError, ValueError):
    """A dialect name the registry does not know (a ValueError too, so pydantic reports it at its key)."""


def known() -> str:
    """The known dialect names as an error message lists them: 'openai', 'gdc' or 'trinity'."""
    *rest, last = (repr(n) for n in DIALECTS)
    return f"{', '.join(rest)} or {last}" if rest else last


def dialect(name: str) -> Dialect:
    """The Dialect record of a name; UnknownDialectError naming the known ones otherwise."""
    try:
        return DIALECTS[name]
    except (KeyError, TypeError):
        raise UnknownDialectError(f"unknown dialect {name!r}; use one of the known dialects: {known()}") from None


def build_payload(dialect_name: str, model: str, system: str, user: str, videos: list[VideoRef],
                  params: dict[str, Any] | None = None, extra_body: dict[str, Any] | None = None) -> dict:
    """The JSON body of one chat/completions request in a dialect."""
    return dialect(dialect_name).payload(model, system, user, videos, params, extra_body)


def endpoint(dialect_name: str, base_url: str, project: str | None = None, location: str | None = None) -> str:
    """The chat/completions URL of a dialect: base_url + /chat/completions, or GDC's project/location path."""
    return dialect(dialect_name).endpoint(base_url, project, location)


def mime_for(dialect_name: str, ext: str) -> str:
    """The MIME type a dialect expects for a file extension."""
    return dialect(dialect_name).mime(ext)
