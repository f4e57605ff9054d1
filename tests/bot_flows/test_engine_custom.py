"""Engine features the default flows do not use: HTTP branches, FAQ intents, fallback limits, loops."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bot_flows.actions import BotInput, CallHttp, Handoff, SendReply, SetAttribute
from bot_flows.engine import FaqCandidate, FaqMatch, FlowEngine, MatcherLookup
from bot_flows.flows import load_flow_sources

NOW = datetime(2025, 3, 4, 2, 0, tzinfo=UTC)

REST = """
flow: main
default: true
start: idle
states:
  idle:
    fallback:
      reply: 请从菜单选择
"""

ORDER = """
flow: order
start: ask_number
triggers:
  - keywords: [查订单, order status]
  - intent: faq_where_is_my_order
states:
  ask_number:
    collect:
      validate: order_number
      attribute: order_no
      prompt: 请输入订单号
      invalid: 订单号格式不对
      max_attempts: 2
      next: lookup
      on_fail: end
  lookup:
    http:
      method: POST
      url: "https://shop.example/api/orders/{attr.order_no}"
      json: {order: "{attr.order_no}", who: "{name}"}
      timeout: 5
      branches:
        - status: 200
          path: order.state
          equals: shipped
          goto: shipped
        - status: [200, 201]
          goto: other
        - status: 4xx
          goto: missing
      on_error: broken
  shipped:
    actions:
      - reply: "已发货，快递单号 {http.json.order.tracking}"
    then: end
  other:
    actions:
      - reply: "订单状态：{http.json.order.state}"
    then: end
  missing:
    actions:
      - reply: 没有找到这个订单
    then: end
  broken:
    actions:
      - reply: 查询失败，稍后再试
    then: end
"""

MENU = """
flow: menu
start: choose
triggers:
  - exact: [菜单, menu]
states:
  choose:
    actions:
      - ask:
          text: 请选择
          choices:
            - {label: 查订单, payload: order}
            - {label: 退货, payload: return}
    transitions:
      - payload: order
        goto: order:ask_number
      - payload: return
        actions:
          - add_tag: wants_return
        goto: end
    fallback:
      reply: 请回复 1 或 2
      max_retries: 2
      then: handoff
  handoff:
    actions:
      - handoff: {reason: menu_confused, message: 正在转人工}
    then: end
"""


class Bot:
    def __init__(self, *sources: str, faq: Any = None) -> None:
        flows = load_flow_sources([(f"flows/f{i}.yaml", s) for i, s in enumerate(sources)])
        self.engine = FlowEngine(flows, faq)
        self.state: dict[str, Any] | None = None

    def feed(self, kind: str = "message", text: str | None = None, choice: str | None = None,
             data: dict[str, Any] | None = None) -> list[Any]:
        inp = BotInput(kind=kind, now=NOW, text=text, choice=choice, data=data or {},  # type: ignore[arg-type]
                       contact={"name": "Li", "attributes": {}})
        result = self.engine.handle(self.state, inp)
        self.state = json.loads(json.dumps(result.state))
        return result.actions


def test_http_call_branches_on_status_and_json_and_ignores_stale_answers() -> None:
    bot = Bot(REST, ORDER)
    bot.feed(text="查订单")
    actions = bot.feed(text="SH2025030400001")
    assert actions[0] == SetAttribute("order_no", "SH2025030400001")
    call = actions[1]
    assert isinstance(call, CallHttp)
    assert (call.method, call.url, call.json_body, call.timeout) == (
        "POST", "https://shop.example/api/orders/SH2025030400001", {"order": "SH2025030400001", "who": "Li"}, 5.0)
    assert bot.feed("http_result", data={"request_id": "someone-else", "status": 200}) == []
    answer = {"order": {"state": "shipped", "tracking": "SF1234567890"}}
    actions = bot.feed("http_result", data={"request_id": call.request_id, "status": 200, "json": answer})
    assert actions == [SendReply("已发货，快递单号 SF1234567890")]
    assert bot.feed("http_result", data={"request_id": call.request_id, "status": 200, "json": answer}) == []


def _order_answer(status: int, body: Any = None) -> list[str]:
    bot = Bot(REST, ORDER)
    bot.feed(text="order status")
    call = bot.feed(text="12345678")[1]
    return [a.text for a in bot.feed("http_result", data={"request_id": call.request_id, "status": status,
                                                          "json": body})]


def test_http_other_branches_and_errors() -> None:
    assert _order_answer(201, {"order": {"state": "paid"}}) == ["订单状态：paid"]
    assert _order_answer(404) == ["没有找到这个订单"]
    assert _order_answer(503) == ["查询失败，稍后再试"]
    assert _order_answer(0) == ["查询失败，稍后再试"], "status 0: network error or timeout"


def test_order_number_validation_has_a_retry_limit() -> None:
    bot = Bot(REST, ORDER)
    bot.feed(text="查订单")
    assert bot.feed(text="不知道") == [SendReply("订单号格式不对")]
    assert bot.feed(text="还是不知道") == []
    assert bot.state and bot.state["at"] == "main:idle"


class OneIntent:
    def match(self, text: str) -> FaqMatch:
        cand = FaqCandidate("faq_where_is_my_order", "我的快递到哪了？", "请提供订单号")
        return FaqMatch("answer" if "快递" in text else "reject", (cand,))


def test_a_confident_faq_intent_enters_a_flow() -> None:
    bot = Bot(REST, ORDER, faq=OneIntent())
    assert bot.feed(text="我的快递到哪里了") == [SendReply("请输入订单号")]


def test_menu_numbered_choice_transition_and_fallback_retry_limit() -> None:
    bot = Bot(REST, ORDER, MENU)
    (ask,) = bot.feed(text="菜单")
    assert [c.label for c in ask.choices] == ["查订单", "退货"]
    assert bot.feed(text="1") == [SendReply("请输入订单号")]

    bot = Bot(REST, ORDER, MENU)
    bot.feed(text="菜单")
    assert bot.feed(text="嗯？") == [SendReply("请回复 1 或 2")]
    assert bot.feed(text="啥") == [SendReply("请回复 1 或 2")]
    (handoff,) = bot.feed(text="不懂")
    assert handoff == Handoff("menu_confused", "正在转人工")


def test_a_then_loop_is_stopped_instead_of_hanging() -> None:
    loop = REST + """
  a:
    then: b
  b:
    then: a
triggers:
  - exact: [loop]
    goto: a
"""
    bot = Bot(loop)
    assert bot.feed(text="loop") == []
    assert bot.state and bot.state["at"] == "main:idle"


def test_matcher_lookup_adapts_the_real_matcher_interface() -> None:
    class Cand:
        entry_id, score, confidence, sentence = "e1", 3.0, 0.9, "运费多少"

    class Entry:
        question, answer, buttons = "运费怎么算？", "满99包邮", ()

    class Matcher:
        def match(self, text: str) -> Any:
            return type("R", (), {"decision": "answer", "candidates": (Cand(), Cand())})()

        def get(self, entry_id: str) -> Any:
            return Entry()

    result = MatcherLookup(Matcher()).match("运费")
    assert result.decision == "answer"
    assert result.candidates[0] == FaqCandidate("e1", "运费怎么算？", "满99包邮", ())
