"""The knowledge base through the REST API: edits are answered at once, import/export, the match tester,
unanswered questions grouped and promoted, and tickets."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from scrm.bootstrap import build_context
from scrm.db.models import FaqEntryRow, UnansweredQuestion
from scrm.listeners import bot as bot_listener
from scrm.services.bot import faq as faq_svc
from scrm.services.uow import unit_of_work
from tests.bot.helpers_bot import TUESDAY_MORNING, bot_replies, say, set_clock, settle
from tests.conftest import REDIS_URL, login, make_agent, make_inbox, wait_for

NEW_ENTRY = {"id": "digital-rmb", "question": "支持数字人民币支付吗？", "paraphrases": ["能用数字人民币付款吗"],
             "answer": "支持，结算时选择“数字人民币”即可。", "category": "支付", "language": "zh"}


async def _start(ctx):
    set_clock(ctx, TUESDAY_MORNING)
    return (await make_inbox(ctx)).id


async def test_a_new_entry_is_answered_without_restart_then_updated_then_deleted(client, ctx, admin_headers):
    inbox = await _start(ctx)
    cid = await say(client, ctx, inbox, "你好")
    r = await client.post("/api/v1/faq", json=NEW_ENTRY, headers=admin_headers)
    assert r.status == 201, await r.text()
    await settle(ctx)
    await say(client, ctx, inbox, "可以用数字人民币付款吗？")
    assert (await bot_replies(ctx, cid))[-1]["text"] == NEW_ENTRY["answer"]

    r = await client.patch("/api/v1/faq/entries/digital-rmb", json={"answer": "支持数字人民币，部分银行有立减。"},
                           headers=admin_headers)
    assert r.status == 200 and (await r.json())["question"] == NEW_ENTRY["question"]
    await settle(ctx)
    await say(client, ctx, inbox, "支持数字人民币支付吗")
    assert (await bot_replies(ctx, cid))[-1]["text"] == "支持数字人民币，部分银行有立减。"

    r = await client.delete("/api/v1/faq/entries/digital-rmb", headers=admin_headers)
    assert r.status == 204
    await settle(ctx)
    await say(client, ctx, inbox, "支持数字人民币支付吗")
    assert "支持数字人民币" not in (await bot_replies(ctx, cid))[-1]["text"]
    assert (await client.delete("/api/v1/faq/entries/digital-rmb", headers=admin_headers)).status == 404


async def test_entry_validation_and_roles(client, ctx, admin_headers):
    r = await client.post("/api/v1/faq", json={**NEW_ENTRY, "id": "bad id", "language": "fr"}, headers=admin_headers)
    body = await r.json()
    assert r.status == 400 and "bad id" in body["error"]["message"] and "fr" in body["error"]["message"]
    r = await client.post("/api/v1/faq", json={**NEW_ENTRY, "id": "shipping-fee"}, headers=admin_headers)
    assert r.status == 409
    await make_agent(ctx, "agent1", "agent")
    await client.post("/api/v1/auth/logout", headers=admin_headers)
    agent_headers = await login(client, "agent1", "password-123")
    r = await client.get("/api/v1/faq?q=运费", headers=agent_headers)
    assert r.status == 200 and any(i["id"] == "shipping-fee" for i in (await r.json())["items"])
    assert (await client.post("/api/v1/faq", json=NEW_ENTRY, headers=agent_headers)).status == 403


async def test_import_dry_run_reports_errors_by_line_and_stores_nothing(client, ctx, admin_headers):
    yaml_body = ("- id: gift-wrap\n  question: 可以包装成礼物吗\n  answer: 可以，下单时勾选礼品包装。\n"
                 "- id: no-answer\n  question: 没有答案的问题\n"
                 "- id: french\n  question: q\n  answer: a\n  language: fr\n")
    r = await client.post("/api/v1/faq/import?format=yaml&dry_run=1", data=yaml_body.encode(), headers=admin_headers)
    report = await r.json()
    assert r.status == 200 and report["valid"] == 1
    assert report["errors"] == [{"line": 4, "message": "answer is required"},
                                {"line": 6, "message": "language 'fr' must be one of ['en', 'zh']"}]
    r = await client.post("/api/v1/faq/import?format=yaml", data=yaml_body.encode(), headers=admin_headers)
    assert r.status == 422 and (await r.json())["error"]["errors"][0]["line"] == 4
    csv_body = "id,question,answer,language\nok-1,问题一,答案一,zh\nbad id,问题二,答案二,zh\n"
    r = await client.post("/api/v1/faq/import?dry_run=1", data=csv_body.encode(),
                          headers={**admin_headers, "Content-Type": "text/csv"})
    assert (await r.json())["errors"][0]["line"] == 3
    async with ctx.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(FaqEntryRow).where(
            FaqEntryRow.key.in_(["gift-wrap", "ok-1"]))) == 0


async def test_import_then_export_round_trips(client, ctx, admin_headers):
    inbox = await _start(ctx)
    body = json.dumps([{"id": "gift-wrap", "question": "Can you gift wrap my order?", "language": "en",
                        "paraphrases": ["do you offer gift wrapping"], "answer": "Yes, tick 'gift wrap' at checkout."}])
    r = await client.post("/api/v1/faq/import", data=body.encode(),
                          headers={**admin_headers, "Content-Type": "application/json"})
    assert r.status == 200 and (await r.json())["created"] == 1
    await settle(ctx)
    cid = await say(client, ctx, inbox, "do you offer gift wrapping?", sender="en-1")
    assert (await bot_replies(ctx, cid))[-1]["text"] == "Yes, tick 'gift wrap' at checkout."
    for fmt in ("csv", "json", "yaml"):
        r = await client.get(f"/api/v1/faq/export?format={fmt}", headers=admin_headers)
        text = await r.text()
        assert r.status == 200 and "gift-wrap" in text and "满 99 元包邮" in text
    r = await client.get("/api/v1/faq/export?format=csv", headers=admin_headers)
    exported = await r.text()
    r = await client.post("/api/v1/faq/import?format=csv&dry_run=1", data=exported.encode(), headers=admin_headers)
    report = await r.json()
    assert report["errors"] == [] and report["valid"] >= 41


async def test_match_tester_shows_candidates(client, ctx, admin_headers):
    r = await client.post("/api/v1/faq/match", json={"text": "运费多少钱"}, headers=admin_headers)
    body = await r.json()
    assert body["decision"] == "answer" and body["candidates"][0]["id"] == "shipping-fee"
    assert 0 < body["candidates"][0]["confidence"] <= 1 and body["candidates"][0]["answer"]


async def test_try_a_question_explains_what_matched_and_what_decided(client, ctx, admin_headers):
    async def tried(text: str) -> dict:
        r = await client.post("/api/v1/faq/match", json={"text": text}, headers=admin_headers)
        assert r.status == 200, await r.text()
        return await r.json()

    body = await tried("My parcel is missing, where is it?")
    best = body["candidates"][0]
    assert body["decision"] == "answer" and best["id"] == "en-tracking" and body["language"] == "en"
    assert body["probability"] >= body["answer_precision"] and body["calibration"] == "en"
    assert "parcel" in best["matched_terms"] and "missing" in best["unmatched_terms"]
    assert body["decided_by"]["model"] == "top1" and body["decided_by"]["contribution"] > 0
    assert body["reason"].startswith("answered") and body["trigger"] is None

    body = await tried("退款")  # a bare topic: which refund question?
    assert body["decision"] == "clarify" and body["options"] == 3 and body["decided_by"]["contribution"] < 0
    assert body["decided_by"]["label"] and "did you mean" in body["reason"]

    body = await tried("what's the capital of peru")
    assert body["decision"] == "reject" and "refused" in body["reason"]

    assert (await tried("can I talk to a human?"))["trigger"]["flow"] == "handoff"
    complaint = (await tried("我要投诉"))["trigger"]
    assert complaint["goto"] == "ticket:complaint" and complaint["phrase"] == "投诉"


async def test_unanswered_questions_are_grouped_and_promoted_in_one_call(client, ctx, admin_headers):
    inbox = await _start(ctx)
    async with unit_of_work(ctx) as tx:
        tx.session.add_all(UnansweredQuestion(text=t) for t in
                           ["可以用花呗分期付款吗", "能用花呗分期付款吗？", "花呗分期付款可以吗", "你们老板是谁"])
    r = await client.get("/api/v1/faq/unanswered", headers=admin_headers)
    groups = (await r.json())["groups"]
    assert [g["count"] for g in groups] == [3, 1]
    huabei = groups[0]
    r = await client.post(huabei["promote_path"], headers=admin_headers,
                          json={"new_entry": {"id": "huabei", "answer": "支持花呗分期，3/6/12 期可选。", "category": "支付"}})
    assert r.status == 201, await r.text()
    entry = (await r.json())["entry"]
    assert entry["question"] == "可以用花呗分期付款吗" and len(entry["paraphrases"]) == 2
    await settle(ctx)
    cid = await say(client, ctx, inbox, "能用花呗分期付款吗？")  # was unanswered; now it is
    assert (await bot_replies(ctx, cid))[-1]["text"] == "支持花呗分期，3/6/12 期可选。"
    groups = (await (await client.get("/api/v1/faq/unanswered", headers=admin_headers)).json())["groups"]
    assert [g["texts"] for g in groups] == [["你们老板是谁"]]
    # A paraphrase of an existing entry, in one call.
    r = await client.post(groups[0]["promote_path"], json={"entry": "human-agent"}, headers=admin_headers)
    assert r.status == 200 and "你们老板是谁" in (await r.json())["entry"]["paraphrases"]
    r = await client.post("/api/v1/faq/unanswered/999/promote", json={"entry": "human-agent"}, headers=admin_headers)
    assert r.status == 404


async def test_tickets_opened_from_a_conversation_and_listed(client, ctx, admin_headers):
    inbox = await _start(ctx)
    cid = await say(client, ctx, inbox, "转人工")
    r = await client.post(f"/api/v1/conversations/{cid}/tickets", json={"subject": "退款未到账", "priority": "high"},
                          headers=admin_headers)
    assert r.status == 201, await r.text()
    ticket = await r.json()
    assert ticket["number"] == 1000 + ticket["id"] and ticket["display_number"] == f"#{ticket['number']}"
    r = await client.get(f"/api/v1/tickets?conversation_id={cid}", headers=admin_headers)
    assert [t["id"] for t in (await r.json())["items"]] == [ticket["id"]]
    assert (await client.get(f"/api/v1/tickets/{ticket['id']}", headers=admin_headers)).status == 200
    r = await client.post(f"/api/v1/conversations/{cid}/tickets", json={"priority": "meh"}, headers=admin_headers)
    assert r.status == 400
    assert (await client.post("/api/v1/conversations/9999/tickets", json={}, headers=admin_headers)).status == 404


async def test_an_edit_reaches_the_index_of_another_process(client, ctx, settings, admin_headers):
    """With Redis, faq.changed crosses processes: a second context's matcher follows without restart."""
    if not REDIS_URL:
        pytest.skip("needs Redis to carry events between processes")
    other = await build_context(settings)
    unsubscribe = bot_listener.install(other)
    try:
        index = await faq_svc.get_index(other)
        assert index.matcher.get("digital-rmb") is None
        r = await client.post("/api/v1/faq", json=NEW_ENTRY, headers=admin_headers)
        assert r.status == 201
        await wait_for(lambda: index.matcher.get("digital-rmb") is not None)
        assert index.matcher.match("能用数字人民币付款吗").best.entry_id == "digital-rmb"
        await client.delete("/api/v1/faq/entries/digital-rmb", headers=admin_headers)
        await wait_for(lambda: index.matcher.get("digital-rmb") is None)
    finally:
        for fn in unsubscribe:
            fn()
        await other.bus.drain(2)
        await other.close()
