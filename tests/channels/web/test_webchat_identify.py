"""A visitor who chatted anonymously and then signs in on the website keeps their chat: it becomes the
signed-in user's (first sign-in), or the anonymous contact is merged into the user's (known user)."""

from __future__ import annotations

from sqlalchemy import func, select

from channels.web.tokens import identifier_hash
from scrm.db.models import Contact, ContactIdentity, Conversation, Inbox
from tests.channels.web.conftest import Visitor


def _mine(session: dict) -> list[str]:
    return [m["text"] for m in session["messages"] if m["from"] == "visitor"]


def _sign(inbox: Inbox, user: str) -> dict[str, str]:
    return {"identifier": user, "identifier_hash": identifier_hash(inbox.secrets["hmac_secret"], user)}


async def test_first_sign_in_takes_over_the_anonymous_chat(client, web_inbox: Inbox, ctx):
    v = Visitor(client, web_inbox)
    await v.session()
    cid = (await v.send("我想退货", status=201))["conversation_id"]
    signed = await v.session(**_sign(web_inbox, "user-7"), name="李四")
    assert signed["identified"] and _mine(signed) == ["我想退货"]
    assert (await v.send("订单号 A-17", status=201))["conversation_id"] == cid  # the same conversation goes on
    async with ctx.db.session() as s:
        ident = (await s.scalars(select(ContactIdentity).where(ContactIdentity.inbox_id == web_inbox.id))).one()
        assert ident.external_id == "u:user-7"
        assert (await s.get(Contact, ident.contact_id)).name == "李四"
    phone = Visitor(client, web_inbox)  # another device of the same user sees the whole chat
    assert _mine(await phone.session(**_sign(web_inbox, "user-7"))) == ["我想退货", "订单号 A-17"]


async def test_a_known_user_absorbs_the_anonymous_contact(client, web_inbox: Inbox, ctx):
    laptop = Visitor(client, web_inbox)
    await laptop.session(**_sign(web_inbox, "user-8"), email="wang@example.com")
    await laptop.send("from my laptop", status=201)
    browser = Visitor(client, web_inbox)  # a new browser, not signed in yet
    await browser.session()
    await browser.send("anonymous question", status=201)
    await browser.session(**_sign(web_inbox, "user-8"))
    async with ctx.db.session() as s:
        user = await s.scalar(select(Contact).join(ContactIdentity, ContactIdentity.contact_id == Contact.id)
                              .where(ContactIdentity.external_id == "u:user-8"))
        anon = await s.scalar(select(ContactIdentity).where(ContactIdentity.external_id.like("v:%")))
        assert anon.contact_id == user.id  # agents see one person with both conversations
        merged = (await s.scalars(select(Contact).where(Contact.merged_into_id == user.id))).all()
        assert len(merged) == 1 and merged[0].id != user.id
        assert await s.scalar(select(func.count()).select_from(Conversation)
                              .where(Conversation.contact_id == user.id)) == 2


async def test_a_forged_or_blocked_anonymous_token_claims_nothing(client, web_inbox: Inbox, ctx, admin_headers):
    spammer = Visitor(client, web_inbox)
    await spammer.session()
    sent = await spammer.send("spam", status=201)
    r = await client.post(f"/api/v1/webchat/conversations/{sent['conversation_id']}/block", headers=admin_headers)
    assert r.status == 200
    await spammer.session(**_sign(web_inbox, "user-9"))  # a blocked chat is not carried into the account
    forged = Visitor(client, web_inbox)
    forged.token = (spammer.token or "")[:-4] + "AAAA"
    await forged.session(**_sign(web_inbox, "user-10"))
    async with ctx.db.session() as s:
        rows = (await s.execute(select(ContactIdentity.external_id, Contact.merged_into_id)
                                .join(Contact, Contact.id == ContactIdentity.contact_id)
                                .where(ContactIdentity.inbox_id == web_inbox.id))).all()
    assert len(rows) == 1 and rows[0][0].startswith("v:") and rows[0][1] is None  # still the blocked visitor
