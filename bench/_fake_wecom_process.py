"""The fake WeCom API of bench/wecom_kf.py in a process of its own, so serving kf/sync_msg pages does not
share the event loop (and the CPU share) of the bench's senders, which time the acknowledgements.

    python bench/_fake_wecom_process.py     # prints the port it listens on, serves until killed

Besides the fake's /cgi-bin API, the bench drives it with /_bench/add (messages readable from now on,
answered with a fresh callback token), /_bench/setup (page sizes, customer profiles) and /_bench/stats.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.channels.wecom.fake_wecom_api import FakeWeCom  # noqa: E402


def control(fake: FakeWeCom, app: web.Application) -> None:
    async def add(request: web.Request) -> web.Response:
        body = await request.json()
        fake.add(*body["items"], open_kfid=body["open_kfid"])
        return web.json_response({"token": fake.new_callback_token()})

    async def setup(request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        if "page_sizes" in body:
            fake.page_sizes = list(body["page_sizes"])
        fake.customers.update(body.get("customers") or {})
        return web.json_response({})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"sync_calls": len(fake.sync_requests)})

    app.router.add_post("/_bench/add", add)
    app.router.add_post("/_bench/setup", setup)
    app.router.add_get("/_bench/stats", stats)


async def main() -> None:
    fake = FakeWeCom(page_size=50)
    app = fake.app()
    control(fake, app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
