"""A flow that calls an HTTP endpoint and branches on its answer: the call runs after the commit,
with the flow's timeout, and its answer (or its failure) drives the next reply."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from aiohttp import web

from bot_flows.flows import load_flows
from scrm.services.bot import rounds as bot_svc
from scrm.web.app import create_app
from tests.bot.helpers_bot import TUESDAY_MORNING, bot_replies, say
from tests.conftest import free_port, make_inbox

ORDER_FLOW = """\
flow: order
priority: 60
start: ask
triggers:
  - keywords: [查订单]
states:
  ask:
    collect:
      validate: order_number
      var: order
      prompt: 请输入订单号
      max_attempts: 2
      next: lookup
      on_fail: end
  lookup:
    http:
      method: GET
      url: "{base}/orders/{{var.order}}"
      timeout: 0.5
      branches:
        - status: 200
          path: status
          equals: shipped
          goto: shipped
        - status: 404
          goto: unknown
      on_error: failed
  shipped:
    actions:
      - reply: "订单 {{var.order}} 已发货，快递单号 {{http.json.tracking}}"
    then: end
  unknown:
    actions:
      - reply: 没有找到这个订单
    then: end
  failed:
    actions:
      - reply: 订单系统暂时无法查询，请稍后再试
    then: end
"""


async def _order_service() -> tuple[web.AppRunner, str]:
    async def order(request: web.Request) -> web.Response:
        number = request.match_info["number"]
        if number == "20250101999":
            await asyncio.sleep(2)  # slower than the flow's timeout
        if number == "20250101001":
            return web.json_response({"status": "shipped", "tracking": "SF1234567890"})
        return web.json_response({"error": "not found"}, status=404)

    app = web.Application()
    app.router.add_get("/orders/{number}", order)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_flow_http_call_branches_on_the_answer_and_on_failure(ctx, settings, aiohttp_client, tmp_path: Path):
    runner, base = await _order_service()
    try:
        flows = tmp_path / "flows"
        shutil.copytree(Path(bot_svc.ROOT) / "config" / "flows", flows)
        (flows / "order.yaml").write_text(ORDER_FLOW.format(base=base), encoding="utf-8")
        rt = bot_svc.get_runtime(ctx)
        rt.flows = load_flows(flows)
        rt.clock = lambda: TUESDAY_MORNING
        client = await aiohttp_client(create_app(settings, ctx=ctx, run_background=False))
        inbox = (await make_inbox(ctx)).id

        cid = await say(client, ctx, inbox, "查订单")
        assert (await bot_replies(ctx, cid))[-1]["text"] == "请输入订单号"
        await say(client, ctx, inbox, "20250101001")
        assert (await bot_replies(ctx, cid))[-1]["text"] == "订单 20250101001 已发货，快递单号 SF1234567890"

        await say(client, ctx, inbox, "查订单")
        await say(client, ctx, inbox, "20250101404")
        assert (await bot_replies(ctx, cid))[-1]["text"] == "没有找到这个订单"

        await say(client, ctx, inbox, "查订单")
        await say(client, ctx, inbox, "20250101999")
        assert (await bot_replies(ctx, cid))[-1]["text"] == "订单系统暂时无法查询，请稍后再试"
        await client.close()
    finally:
        await runner.cleanup()
