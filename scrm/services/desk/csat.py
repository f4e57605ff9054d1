"""Customer satisfaction: ask for a 1-5 rating when a conversation is resolved; record the answer.

Buttons where the channel has them (and the inbox has not turned them off), a signed rating link
for email (scrm.services.desk.csat_link; the public page is scrm.web.csat_page), numbered text
otherwise. Nothing is sent to an unreachable or unsubscribed contact or outside the channel's
reply window. A reply "1".."5" (optionally followed by a comment, e.g. "5 很满意") within the
answer window records the rating for the agent, team and inbox that handled the conversation.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from scrm import events as ev
from scrm.db.models import Conversation, Message, utcnow
from scrm.db.models_desk import ConversationStats, CsatSurvey
from scrm.domain import Choice
from scrm.services.conversations import actions as conv_svc
from scrm.services.desk import csat_link
from scrm.services.desk.settings import get_section
from scrm.services.outbox import enqueue_message
from scrm.services.uow import Tx

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from channels.base import Capabilities

CSAT_ANSWERED = "csat.answered"
LABELS = {1: "1 😞 很不满意 / Very poor", 2: "2 🙁 不满意 / Poor", 3: "3 😐 一般 / OK",
          4: "4 🙂 满意 / Good", 5: "5 😄 非常满意 / Excellent"}
_ANSWER = re.compile(r"^\s*([1-5])(?:\s*(?:分|星|stars?)?)?(?:[\s,，.。:：!！-]+(.*))?$", re.S | re.I)
PAYLOAD_PREFIX = "csat:"
LINK_CHANNELS = frozenset({"email"})  # a link reads better than numbered options in a mail
MAX_COMMENT = 2000


def _has_buttons(caps: Capabilities | None, settings: dict[str, Any]) -> bool:
    if caps is None:
        return False
    return bool(caps.buttons and caps.max_buttons >= 5 and settings.get("buttons", True) is not False)


async def not_wanted(tx: Tx, conv: Conversation) -> str | None:
    """Why no survey is asked for this resolved conversation (settings, bot alone, one pending), or None."""
    cfg = await get_section(tx.session, "csat")
    if not cfg["enabled"]:
        return "csat disabled"
    stats = await tx.session.get(ConversationStats, conv.id)
    if cfg["only_when_human"] and not (stats and stats.human_involved) and conv.assignee_id is None:
        return "resolved by the bot alone"
    # One open survey per conversation: a second resolve does not ask again while one is pending.
    pending = await tx.session.scalar(select(CsatSurvey.id).where(CsatSurvey.conversation_id == conv.id,
                                                                  CsatSurvey.status == "asked"))
    return "already asked" if pending else None


async def _new_survey(tx: Tx, conv: Conversation, ticket_id: int | None = None) -> CsatSurvey:
    stats = await tx.session.get(ConversationStats, conv.id)
    survey = CsatSurvey(conversation_id=conv.id, inbox_id=conv.inbox_id, contact_id=conv.contact_id,
                        agent_id=conv.assignee_id, team_id=stats.team_id if stats else None, ticket_id=ticket_id,
                        status="asked", asked_at=utcnow())
    tx.session.add(survey)
    await tx.session.flush()
    return survey


def _buttons(survey: CsatSurvey) -> list[Choice]:
    return [Choice(LABELS[n], f"{PAYLOAD_PREFIX}{survey.id}:{n}") for n in range(5, 0, -1)]


async def ask(tx: Tx, conversation_id: int, *, ticket_id: int | None = None,
              public_url: str | None = None) -> tuple[CsatSurvey | None, str]:
    """Send the survey for a resolved conversation; returns (survey or None, how it was asked or why not).

    `public_url` (settings server.public_url) is needed for the email rating link; without it email
    falls back to numbered text."""
    conv, inbox, identity = await conv_svc.load(tx, conversation_id)
    caps = tx.channels.capabilities(inbox.channel_type)
    if caps is not None and caps.survey_on_close:
        return None, "left to the message that ends the channel's session (survey_for_closing)"
    why_not = await not_wanted(tx, conv)
    if why_not:
        return None, why_not
    window = await conv_svc.reply_window_counted(tx, inbox, identity)
    if not window["open"]:
        return None, f"not asked: {window['reason']}"
    cfg = await get_section(tx.session, "csat")
    survey = await _new_survey(tx, conv, ticket_id)
    question = cfg["question_zh"] + "\n" + cfg["question_en"]
    metadata: dict[str, Any] = {"csat_survey_id": survey.id}
    if inbox.channel_type in LINK_CHANNELS and public_url:
        token = csat_link.sign(await csat_link.signing_secret(tx.session), survey.id,
                               survey.asked_at + timedelta(hours=cfg["answer_hours"]))
        url = csat_link.link_url(public_url, token)
        choices, how = [], "link"
        text = (f"{question}\n\n请点击链接评分 / Rate us here:\n{url}\n\n"
                "也可以直接回复数字 1-5 / Or simply reply with a number 1-5.")
        metadata.update(csat_url=url, subject=conv.subject or "服务评价 / How did we do?")
    elif _has_buttons(caps, inbox.settings or {}):
        choices, text, how = _buttons(survey), question, "buttons"
    else:
        choices = []
        text = question + "\n" + "\n".join(LABELS[n] for n in range(5, 0, -1)) + "\n请回复数字 1-5 / Reply with a number 1-5"
        how = "text"
    await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="system", text=text,
                          choices=choices, automatic=True, metadata=metadata)
    return survey, how


async def survey_for_closing(tx: Tx, conv: Conversation) -> tuple[CsatSurvey | None, str, list[Choice]]:
    """The survey a channel sends with the message that ends its session (Capabilities.survey_on_close):
    (survey, question, rating buttons), or (None, why not, []). The caller sends it, or drops it with
    `not_sent` when the closing message could not carry it."""
    why_not = await not_wanted(tx, conv)
    if why_not:
        return None, why_not, []
    cfg = await get_section(tx.session, "csat")
    survey = await _new_survey(tx, conv)
    return survey, cfg["question_zh"] + "\n" + cfg["question_en"], _buttons(survey)


async def not_sent(tx: Tx, survey_id: int) -> None:
    """A survey that never reached the customer is no survey asked (reports count asked ones)."""
    survey = await tx.session.get(CsatSurvey, survey_id)
    if survey is not None and survey.status == "asked":
        await tx.session.delete(survey)


def parse_answer(text: str | None, payload: dict[str, Any] | None) -> tuple[int, str | None, int | None] | None:
    """(rating, comment, survey id from a button) from a customer message, or None if it is no rating."""
    choice = (payload or {}).get("choice") or (payload or {}).get("payload")
    if isinstance(choice, str) and choice.startswith(PAYLOAD_PREFIX):
        try:
            _, sid, n = choice.split(":")
            rating = int(n)
        except ValueError:
            return None
        return (rating, None, int(sid)) if 1 <= rating <= 5 else None
    if not text:
        return None
    normalized = unicodedata.normalize("NFKC", text)
    m = _ANSWER.match(normalized)
    if not m:
        return None
    comment = m.group(2)
    if comment is not None and len(normalized) == len(text):
        comment = text[m.start(2):]  # keep the customer's own punctuation (full-width stays full-width)
    comment = (comment or "").strip() or None
    return int(m.group(1)), comment, None


async def record_reply(tx: Tx, message: Message, conv: Conversation) -> CsatSurvey | None:
    """If this customer message answers a pending survey, store the rating (and put the
    conversation back to resolved if the answer reopened it)."""
    parsed = parse_answer(message.text, message.payload)
    if parsed is None:
        return None
    rating, comment, sid = parsed
    cfg = await get_section(tx.session, "csat")
    since = utcnow() - timedelta(hours=cfg["answer_hours"])
    stmt = select(CsatSurvey).where(CsatSurvey.status == "asked", CsatSurvey.asked_at >= since)
    stmt = stmt.where(CsatSurvey.id == sid) if sid else stmt.where(CsatSurvey.inbox_id == conv.inbox_id,
                                                                   CsatSurvey.contact_id == conv.contact_id)
    survey = (await tx.session.scalars(stmt.order_by(CsatSurvey.id.desc()).limit(1).with_for_update())).first()
    if survey is None or survey.contact_id != conv.contact_id:
        return None
    _store_answer(tx, survey, rating, comment, "reply")
    conv, _, _ = await conv_svc.load(tx, conv.id)  # its row: no message is stored while we close it again
    later = await tx.session.scalar(select(Message.id).where(
        Message.conversation_id == conv.id, Message.direction == "in", Message.id > message.id).limit(1))
    if conv.status != "resolved" and later is None:  # a message after the rating is a new request: stay open
        # The rating is not a new request: close again what the answer reopened.
        previous = conv.status
        conv.status, conv.resolved_at, conv.waiting_since, conv.unread_count = "resolved", utcnow(), None, 0
        await conv_svc.add_system_note(tx, conv, f"客户评分 {rating}/5 / Customer rated {rating}/5",
                                       csat={"survey_id": survey.id, "rating": rating})
        tx.emit(ev.CONVERSATION_STATUS_CHANGED, conversation_id=conv.id, status="resolved", previous=previous,
                by="csat", inbox_id=conv.inbox_id)
        tx.emit(ev.CONVERSATION_UPDATED, conversation_id=conv.id, inbox_id=conv.inbox_id)
    _, inbox, identity = await conv_svc.load(tx, conv.id, lock=False)
    if (await conv_svc.reply_window_counted(tx, inbox, identity))["open"]:
        await enqueue_message(tx, inbox=inbox, conversation=conv, identity=identity, sender_kind="system",
                              text=cfg["thanks"], automatic=True)
    return survey


def _store_answer(tx: Tx, survey: CsatSurvey, rating: int, comment: str | None, via: str) -> None:
    survey.rating, survey.comment, survey.status, survey.answered_at = rating, comment, "answered", utcnow()
    tx.emit(CSAT_ANSWERED, survey_id=survey.id, conversation_id=survey.conversation_id, rating=rating,
            agent_id=survey.agent_id, inbox_id=survey.inbox_id, via=via)


async def link_survey(session: AsyncSession, token: str) -> CsatSurvey:
    """The survey a rating link may still answer; raises csat_link.LinkError (404, 409 answered, 410 expired)."""
    checked = await csat_link.verify(session, token)
    return _open_survey(await session.get(CsatSurvey, checked.survey_id, populate_existing=True))


def _open_survey(survey: CsatSurvey | None) -> CsatSurvey:
    if survey is None:
        raise csat_link.LinkError("链接无效 / This link is not valid.", 404)
    if survey.status == "answered":
        raise csat_link.LinkError("您已评价过，感谢！/ You have already rated this conversation. Thank you!", 409)
    if survey.status != "asked":
        raise csat_link.LinkError("评分链接已过期 / This rating link has expired.", 410)
    return survey


async def record_link_answer(tx: Tx, token: str, rating: int, comment: str | None) -> CsatSurvey:
    """Store a rating given on the link's page (one use: the survey row is locked and must still be open)."""
    if rating not in LABELS:
        raise csat_link.LinkError("请选择 1-5 分 / Please choose a rating from 1 to 5.", 400)
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise csat_link.LinkError(f"评论太长（最多 {MAX_COMMENT} 字）/ The comment is too long "
                                  f"(at most {MAX_COMMENT} characters).", 400)
    checked = await csat_link.verify(tx.session, token)
    # Locked and re-read: of two clicks racing, the second sees "answered".
    survey = _open_survey(await tx.session.get(CsatSurvey, checked.survey_id, with_for_update=True,
                                               populate_existing=True))
    _store_answer(tx, survey, rating, comment, "link")
    conv = await tx.session.get(Conversation, survey.conversation_id)
    if conv is not None:
        await conv_svc.add_system_note(tx, conv, f"客户通过评分链接打分 {rating}/5 / Customer rated {rating}/5 via the link",
                                       csat={"survey_id": survey.id, "rating": rating})
    return survey
