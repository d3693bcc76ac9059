"""Give Prefect concurrency leases back at their times: `python -m flows.prefect.release_later '{id: epoch s}'`.

A run with a shared limit hands its last returns here, so it ends at its last answer, not a hold later.
Each lease comes with the wall-clock time it may go back, not a delay: this process's own start-up (a
Python importing Prefect, seconds on a loaded machine) must not hold every lease that much longer, which
left the shared rate idle at each change of shard. Killed before its time, the leases expire on the
server instead (later, never earlier).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from uuid import UUID


async def release_at(deadlines: dict[str, float], release: Callable[[str], Awaitable[object]],
                     clock: Callable[[], float] = time.time,
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> list[str]:
    """Release each lease at its deadline (epoch seconds), earliest first; returns the ids released."""
    done = []
    for lease_id, at in sorted(deadlines.items(), key=lambda kv: kv[1]):
        await sleep(max(0.0, at - clock()))
        try:
            await release(lease_id)
            done.append(lease_id)
        except Exception:  # noqa: BLE001 - a lease gone already (expired) is back anyway
            pass
    return done


async def main(deadlines: dict[str, float]) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await release_at(deadlines, lambda lease_id: client.release_concurrency_slots_with_lease(UUID(lease_id)))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
