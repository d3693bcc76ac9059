"""Give Prefect concurrency leases back at their times: `python -m flows.prefect.release_later '{id: seconds}'`.

A run with a shared limit hands its last returns here, so it ends at its last answer, not a hold later.
Killed before its time, the leases expire on the server instead (later, never earlier).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from uuid import UUID


async def main(pending: dict[str, float]) -> None:
    from prefect.client.orchestration import get_client

    start = time.monotonic()
    async with get_client() as client:
        for lease_id, after_s in sorted(pending.items(), key=lambda kv: kv[1]):
            await asyncio.sleep(max(0.0, start + after_s - time.monotonic()))
            try:
                await client.release_concurrency_slots_with_lease(UUID(lease_id))
            except Exception:  # noqa: BLE001 - a lease gone already (expired) is back anyway
                pass


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
