"""`python -m flows.deploy [prefect deploy options]`: `prefect deploy` with one request fixed for this Prefect pin.

Prefect 3.8.8's `prefect deploy` asks the server for a pool's workers with `"limit": null, "offset": null`,
which its server (on the pinned fastapi) refuses with 422 after the first deployment is created; this sends
the defaults as numbers and then runs the unchanged CLI.
"""

from __future__ import annotations

import sys

from prefect.client.orchestration._work_pools.client import WorkPoolAsyncClient

_read_workers = WorkPoolAsyncClient.read_workers_for_work_pool


async def _read_workers_with_paging(self, work_pool_name, worker_filter=None, offset=None, limit=None):
    return await _read_workers(self, work_pool_name, worker_filter, 0 if offset is None else offset,
                               200 if limit is None else limit)


def main(argv: list[str] | None = None) -> int:
    from prefect.cli import app

    # patching the client class is the fix itself: Prefect's CLI builds its own client inside `deploy`
    WorkPoolAsyncClient.read_workers_for_work_pool = _read_workers_with_paging  # type: ignore[method-assign]
    sys.argv = ["prefect", "deploy", *(sys.argv[1:] if argv is None else argv)]
    app()  # typer's app exits the process with the command's status (SystemExit); a return is success
    return 0


if __name__ == "__main__":
    sys.exit(main())
