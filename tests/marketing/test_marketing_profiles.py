"""Merging contacts (with a visible conflict rule and an audit entry), suggestions, CSV import/export."""

from __future__ import annotations

import base64
import csv
import io

from sqlalchemy import select

from scrm.db.models import AuditLog, Contact, ContactIdentity, ContactTag, Conversation, Ticket
from scrm.db.models_marketing import AttributeDefinition
from tests.conftest import make_inbox
from tests.marketing.helpers_marketing import make_contact


async def test_merge_moves_everything_and_is_audited(ctx, client, admin_headers):
    tg = await make_inbox(ctx, "telegram", name="TG", secrets={"bot_token": "123456:ABC"})
    mail = await make_inbox(ctx, "email", name="Mail", settings={"address": "n@example.com"}, secrets={})
    target = await make_contact(ctx, name="张三", phone="+86 138 0000 0000", tags=("vip",),
                                attributes={"city": "北京", "level": "gold"}, identities=[(tg, "42", {})])
    source = await make_contact(ctx, name="San Zhang", email="zs@example.com", tags=("新客",),
                                attributes={"city": "上海", "age": 30}, opt_outs={"broadcast:email": True},
                                identities=[(mail, "zs@example.com", {})])
    async with ctx.db.transaction() as s:
        ident = await s.scalar(select(ContactIdentity).where(ContactIdentity.contact_id == source))
        conv = Conversation(inbox_id=mail.id, contact_id=source, identity_id=ident.id, bot_state={}, meta={})
        s.add(conv)
        await s.flush()
        s.add(Ticket(number=7, subject="退款", contact_id=source, conversation_id=conv.id, fields={}))
    r = await client.post("/api/v1/contact-merges", json={"target_id": target, "source_id": source},
                          headers=admin_headers)
    body = await r.json()
    assert r.status == 200, body
    assert body["moved"] == {"contact_identities": 1, "conversations": 1, "tickets": 1}
    assert body["conflicts"] == {"name": {"kept": "张三", "discarded": "San Zhang"},
                                 "attributes.city": {"kept": "北京", "discarded": "上海"}}
    assert "surviving contact's values win" in body["rule"]
    async with ctx.db.session() as s:
        t = await s.get(Contact, target)
        assert t.email == "zs@example.com" and t.attributes == {"city": "北京", "level": "gold", "age": 30}
        assert t.opt_outs["broadcast:email"] is True  # a refusal survives the merge
        assert set((await s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == target))).all()) == {"vip", "新客"}
        assert (await s.get(Contact, source)).merged_into_id == target
        entry = await s.scalar(select(AuditLog).where(AuditLog.action == "contact.merge"))
        assert entry.target_id == target and entry.data["source_id"] == source
    again = await client.post("/api/v1/contact-merges", json={"target_id": target, "source_id": source},
                              headers=admin_headers)
    assert again.status == 409
    tl = await (await client.get(f"/api/v1/contacts/{target}/timeline", headers=admin_headers)).json()
    assert {i["type"] for i in tl["items"]} >= {"conversation", "ticket", "change"}


async def test_merge_suggestions_need_a_verified_value(ctx, client, admin_headers):
    mail = await make_inbox(ctx, "email", name="Mail", settings={"address": "n@example.com"}, secrets={})
    a = await make_contact(ctx, name="A", email="li@example.com", identities=[(mail, "li@example.com", {})])
    b = await make_contact(ctx, name="B", email="LI@example.com")
    await make_contact(ctx, name="C", email="same@example.com")  # shared but never verified
    await make_contact(ctx, name="D", email="same@example.com")
    e = await make_contact(ctx, name="E", phone="+86 139-1111-2222", attributes={"phone_verified": True})
    f = await make_contact(ctx, name="F", phone="13911112222")
    r = await client.get("/api/v1/contact-merges/suggestions", headers=admin_headers)
    pairs = {(x["target"]["id"], x["source"]["id"], x["reason"]) for x in (await r.json())["suggestions"]}
    assert pairs == {(a, b, "same email"), (e, f, "same phone")}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_csv_import_dry_run_errors_and_encodings(ctx, client, admin_headers):
    async with ctx.db.transaction() as s:
        s.add(AttributeDefinition(key="spend", label="消费", type="number", choices=[]))
    text = ("姓名,邮箱,电话,标签,消费,同意邮件\n"
            "张三,zhang@example.com,13800000000,vip;新客,100,是\n"
            "李四,not-an-email,,,abc,\n"
            ",,,,,\n"
            "王五,wang@example.com,,,12.5,否\n")
    mapping = {"姓名": "name", "邮箱": "email", "电话": "phone", "标签": "tags", "消费": "attributes.spend",
               "同意邮件": "consent.email"}
    for encoded in (text.encode("gb18030"), b"\xef\xbb\xbf" + text.encode("utf-8"), text.encode("utf-8")):
        r = await client.post("/api/v1/contact-import", headers=admin_headers,
                              json={"data_base64": _b64(encoded), "mapping": mapping, "dry_run": True})
        body = await r.json()
        assert (body["rows"], body["created"], body["failed"]) == (3, 2, 1), body
        assert body["errors"][0]["row"] == 3
        assert "not an email" in body["errors"][0]["message"] and "spend: expected a number" in body["errors"][0]["message"]
    async with ctx.db.session() as s:
        assert (await s.scalars(select(Contact))).all() == []  # dry run wrote nothing
    r = await client.post("/api/v1/contact-import", headers=admin_headers,
                          json={"data_base64": _b64(text.encode("gb18030")), "mapping": mapping})
    assert (await r.json())["created"] == 2
    async with ctx.db.session() as s:
        z = await s.scalar(select(Contact).where(Contact.email == "zhang@example.com"))
        assert z.name == "张三" and z.attributes == {"spend": 100, "consent": {"email": True}}
    bad = await client.post("/api/v1/contact-import", headers=admin_headers,
                            json={"data_base64": _b64(b"\xff\xfe\x00\x81bad"), "mapping": {"a": "name"}})
    assert bad.status == 400 and "neither UTF-8 nor GB18030" in (await bad.json())["error"]["message"]
    bad = await client.post("/api/v1/contact-import", headers=admin_headers,
                            json={"data_base64": _b64(text.encode()), "mapping": {"Name": "name"}})
    assert bad.status == 400 and "column 'Name' is not in the file" in (await bad.json())["error"]["message"]
    r = await client.get("/api/v1/contact-export", headers=admin_headers)
    raw = await r.read()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert {x["name"] for x in rows} == {"张三", "王五"} and rows[0]["tags"] == "vip;新客"
