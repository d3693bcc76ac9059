import asyncio
import base64
import io
import json

import pytest

from tasks.dialects.base import InlineData
from tasks.errors import SourceError
from tasks.prepare.body import ByteBudget, RequestBody, placeholder


def body_for(data: bytes, declared: int | None = None):
    token = placeholder()
    payload = {"model": "m",
               "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": token}}]}]}
    inline = InlineData(lambda: io.BytesIO(data), len(data) if declared is None else declared, "video/mp4", "clip.mp4")
    return RequestBody(payload, {token: inline})


async def collect(body):
    return b"".join([chunk async for chunk in body.stream()])


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1000, 3 * 256 * 1024 + 1, 2 * 1024 * 1024])
def test_streamed_body_is_exact_json_with_a_data_url(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    body = body_for(data)
    streamed = asyncio.run(collect(body))
    assert len(streamed) == len(body) == len(body.to_bytes())
    url = json.loads(streamed)["messages"][0]["content"][0]["video_url"]["url"]
    assert url == "data:video/mp4;base64," + base64.b64encode(data).decode()


def test_a_video_that_changed_since_listing_fails_the_stream():
    with pytest.raises(SourceError, match="clip.mp4: changed while being sent"):
        asyncio.run(collect(body_for(b"x" * 100, declared=120)))


def test_byte_budget_bounds_what_is_held_together():
    budget, held, seen = ByteBudget(100), [0], []

    async def one(n):
        async with budget.hold(n):
            held[0] += n
            seen.append(held[0])
            await asyncio.sleep(0.001)
            held[0] -= n

    async def main():
        await asyncio.gather(*(one(n) for n in [60, 30, 30, 90, 10, 250, 40]))

    asyncio.run(main())
    assert len(seen) == 7 and max(seen) == 250
    assert all(h <= 100 for h in seen if h != 250)  # the one over the budget went alone; the rest within 100
