"""Structured answers: a JSON schema asked for as response_format or in the prompt, answers parsed and checked."""

from __future__ import annotations

import json
from typing import Any

from jsonschema.exceptions import relevance
from jsonschema.validators import validator_for

MAX_ERRORS = 3  # validation errors quoted back to the model in a repair request


def response_format(name: str, schema: dict) -> dict:
    """The OpenAI-style `response_format` asking for strict JSON that validates against `schema`."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def schema_in_prompt(user: str, name: str, schema: dict) -> str:
    """The user prompt with the schema stated in it, for providers that take no response_format."""
    return (f"{user}\n\nAnswer with one JSON object and nothing else (no prose, no code fences). It must validate "
            f"against this JSON Schema ({name}):\n{json.dumps(schema, separators=(',', ':'))}")


def ask_for_schema(structured_output: str, user: str, params: dict, name: str, schema: dict) -> tuple[str, dict]:
    """(user prompt, request params) asking for `schema` the way the provider takes it."""
    if structured_output == "prompt":
        return schema_in_prompt(user, name, schema), params
    return user, {**params, "response_format": response_format(name, schema)}


def parse_answer(text: str) -> Any:
    """The JSON value of an answer, also when wrapped in a ``` fence; ValueError saying why it is not JSON."""
    s = text.strip()
    if s.startswith("```"):
        s = s[3:].removeprefix("json").removeprefix("JSON")
        s = s[: s.rfind("```")] if s.rstrip().endswith("```") else s
    try:
        return json.loads(s)
    except ValueError as e:
        raise ValueError(f"the answer is not JSON ({e})") from None


def _path(error) -> str:
    where = "$"
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where


def schema_errors(schema: dict, value: Any) -> list[str]:
    """The most relevant validation errors of `value` (at most MAX_ERRORS), as `$.path: message`; [] when valid."""
    validator = validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=relevance)
    out = []
    for e in errors[:MAX_ERRORS]:
        message = e.message if len(e.message) <= 240 else e.message[:237] + "..."
        out.append(f"{_path(e)}: {message}")
    return out


def check_answer(schema: dict, text: str) -> tuple[Any, str | None]:
    """(the parsed answer or None, the reason it does not validate or None)."""
    try:
        value = parse_answer(text)
    except ValueError as e:
        return None, str(e)
    errors = schema_errors(schema, value)
    return value, "; ".join(errors) if errors else None


def repair_messages(answer: str, error: str) -> list[dict]:
    """The messages that follow a bad answer: the answer itself, then what is wrong with it."""
    return [{"role": "assistant", "content": answer},
            {"role": "user", "content": f"That answer does not match the required JSON schema: {error}. Answer "
                                        "again with only the corrected JSON object."}]
