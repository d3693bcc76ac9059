import asyncio
import json

import httpx
import pytest

from tasks.call.auth import Credentials
from tasks.call.client import CallResult, ProviderClient
from tasks.call.responses import Completion
from tasks.call.send import check_and_repair
from tasks.call.structured import ask_for_schema, check_answer, parse_answer, schema_errors
from tasks.config.run import ProviderConfig

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["events"], "properties": {
    "events": {"type": "array", "items": {"type": "object", "required": ["start_s", "end_s"], "properties": {
        "start_s": {"type": "number"}, "end_s": {"type": "number"}}}}}}


def test_answer_parsed_bare_or_fenced():
    assert parse_answer(' {"a": 1} ') == {"a": 1}
    assert parse_answer('```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    with pytest.raises(ValueError, match="not JSON"):
        parse_answer("Here you go: {a: 1}")


def test_errors_name_the_path():
    errors = schema_errors(SCHEMA, {"events": [{"start_s": 1, "end_s": "soon"}], "extra": 1})
    assert any(e.startswith("$.events[0].end_s: 'soon' is not of type 'number'") for e in errors)
    assert any(e.startswith("$: Additional properties") for e in errors)
    assert check_answer(SCHEMA, '{"events": []}') == ({"events": []}, None)
    assert check_answer(SCHEMA, "[]")[1] == "$: [] is not of type 'object'"


def test_schema_as_response_format_or_in_the_prompt():
    user, params = ask_for_schema("json_schema", "Index it.", {"temperature": 0}, "ix", SCHEMA)
    assert user == "Index it." and params["temperature"] == 0
    assert params["response_format"] == {"type": "json_schema", "json_schema": {"name": "ix", "schema": SCHEMA,
                                                                                "strict": True}}
    user, params = ask_for_schema("prompt", "Index it.", {"temperature": 0}, "ix", SCHEMA)
    assert params == {"temperature": 0} and user.startswith("Index it.\n\n") and json.dumps(
        SCHEMA, separators=(",", ":")) in user


def completion(text, tokens=10):
    return {"id": "r", "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": tokens, "completion_tokens": 2, "total_tokens": tokens + 2}}


def repaired(answers, first_text="[]"):
    """check_and_repair over a MockTransport answering `answers`; returns (result, repairs, request bodies)."""
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=completion(answers[len(seen) - 1]))

    p = ProviderConfig(dialect="openai", base_url="http://provider.test/v1", model="m", api_key_env="K")
    payload = {"model": "m", "messages": [{"role": "user", "content": "Index it."}]}
    first = CallResult(Completion(first_text, "stop", "r0", 10, 2, 12), None, 1, 5)

    def check(text):
        return check_answer(SCHEMA, text)[1]

    async def main():
        async with ProviderClient(p, Credentials(p, token="t"), transport=httpx.MockTransport(handler)) as c:
            return await check_and_repair(c, payload, {}, first, check(first_text), check, "k", 100)

    result, repairs = asyncio.run(main())
    return result, repairs, seen


def test_one_repair_sends_the_answer_and_the_error_back():
    result, repairs, seen = repaired(['{"events": []}'])
    assert repairs == 1 and result.error is None and result.completion.text == '{"events": []}'
    messages = seen[0]["messages"]
    assert messages[0] == {"role": "user", "content": "Index it."}
    assert messages[1] == {"role": "assistant", "content": "[]"}
    assert messages[2]["role"] == "user" and "$: [] is not of type 'object'" in messages[2]["content"]
    assert result.attempts == 2 and result.completion.prompt_tokens == 20  # both requests were paid


def test_still_invalid_after_the_repair_is_an_invalid_output_error_keeping_the_answer():
    result, repairs, seen = repaired(['{"events": [{"start_s": "x"}]}'])
    assert repairs == 1 and len(seen) == 1
    assert result.error.kind == "invalid_output" and "$.events[0]" in str(result.error)
    assert result.completion.text == '{"events": [{"start_s": "x"}]}' and result.completion.total_tokens == 24


def test_a_valid_answer_sends_nothing_more():
    result, repairs, seen = repaired([], first_text='{"events": []}')
    assert (repairs, seen, result.attempts) == (0, [], 1)
