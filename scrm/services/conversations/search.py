"""Inbox text search: which conversations match a term (contact name, email, phone or any message text).

Semantics everywhere: case-insensitive substring (ILIKE '%term%'), so Chinese text without spaces matches
inside runs. Results are conversations, newest activity first, combined with the list's tab filters and cursor.

SQLite gets one plain LIKE condition (correct, not tuned). PostgreSQL picks between two strategies, because
no single plan is fast for both kinds of term at 100k conversations / 1M messages:

* walk: follow the tab's own ordered index (newest first) and probe each conversation's messages with a
  LIMIT 1 lateral lookup. Cost grows with how many conversations are walked before a page is full, so it is
  fast when the term is common (nearly every conversation matches) and slow when it is rare.
* trigram: ask the pg_trgm GIN indexes for matching messages and contacts, then sort the few conversations
  found. Fast for rare terms; a GIN scan reads every trigram's whole posting list though, so a phrase such
  as "order 350003" is looked up by its rarest word only ("350003") and the full phrase is rechecked on
  those rows; that keeps the frequent trigrams of "order" (in ~every message) out of the index scan.
  Terms of one or two CJK characters ("王五", "退款") have no trigram; they use the spaced-out expression
  indexes of migration 0009 instead.

Which one runs first comes from the planner statistics (pg_stats samples of messages.text and the contact
columns): a term seen in the sample starts with a bounded walk; one not seen starts with the trigram lookup.
Each step is bounded (walk budget, trigram row cap) and falls back to the other, so a wrong guess costs one
bounded step. Measured at 100k conversations / 1M messages: 4-15 ms for rare and common terms alike; a
phrase of common words that matches ~1-2% of conversations ("about order 35") is the slow middle, 50-150 ms.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    union,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from scrm.db.models import Contact, Conversation, Message

# Conversations a first walk visits before giving up on a "common" term (~10 messages each).
WALK_BUDGET = 300
# A first walk that found at least this share of hits keeps walking: the page fills within ~1/share rows.
WALK_ON_SHARE = 0.04
# Matching rows the trigram step accepts before deciding the term is too common for it.
TRIGRAM_CAP = 20000
# A word present in at least this share of sampled messages is treated as common.
COMMON_SHARE = 0.02
STATS_TTL = 300.0  # seconds a process keeps the pg_stats sample

_WORD = re.compile(r"[^\W_]+")  # pg_trgm's words: runs of letters/digits (CJK included)


def like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _contact_match(contact: Any, like: str) -> ColumnElement[bool]:
    return or_(contact.name.ilike(like, escape="\\"), contact.email.ilike(like, escape="\\"),
               contact.phone.ilike(like, escape="\\"))


def text_condition(term: str) -> ColumnElement[bool]:
    """The plain condition (any backend): the contact or any message of the conversation contains `term`."""
    like = like_pattern(term)
    return or_(
        Conversation.contact_id.in_(select(Contact.id).where(_contact_match(Contact, like))),
        exists().where(Message.conversation_id == Conversation.id, Message.text.ilike(like, escape="\\")),
    )


@dataclass(frozen=True)
class Plan:
    """How a term will be looked up: `piece` is the substring given to the trigram index (None: no index);
    `spaced`: through the spaced-out expression indexes (terms of one or two CJK characters)."""

    piece: str | None
    common: bool
    spaced: bool = False


Samples = dict[str, list[tuple[str, float]]]  # "table.column" -> sampled lower-cased values with their weight
# database url -> (taken at, samples, has the trigram index, has the spaced indexes)
_stats_cache: dict[str, tuple[float, Samples, bool, bool]] = {}

# Every non-ASCII character becomes a word of its own (" 王  五 "), so pg_trgm indexes terms of one or two
# CJK characters too ("王五" is a whole surname + name; "退款" a whole word). x contains t exactly when
# spaced(x) contains spaced(t). The SQL must match the expression of migration 0009 character for character.
_NON_ASCII = re.compile(r"([^\x01-\x7f])")
SPACED_MESSAGE = r"regexp_replace(messages.text, '([^\x01-\x7f])', ' \1 ', 'g')"
HAS_NON_ASCII = r"messages.text ~ '[^\x01-\x7f]'"  # the partial index's predicate, verbatim
SPACED_CONTACT = (r"regexp_replace(coalesce(contacts.name, '') || ' ' || coalesce(contacts.email, '') || ' ' || "
                  r"coalesce(contacts.phone, ''), '([^\x01-\x7f])', ' \1 ', 'g')")


def spaced(term: str) -> str:
    return _NON_ASCII.sub(r" \1 ", term)


def _share(word: str, samples: Sequence[tuple[str, float]]) -> float:
    return sum(weight for sample, weight in samples if word in sample)


def plan_for(term: str, samples: Samples, has_trigram: bool, has_spaced: bool = False) -> Plan:
    """The rarest word of the term in the sampled messages, and whether the term is common (walk first).

    Without statistics (never analyzed) the term counts as common: the walk is bounded and falls back.
    """
    messages = samples.get("messages.text", [])
    in_contacts = any(_share(term.lower(), samples.get(f"contacts.{col}", [])) >= COMMON_SHARE
                      for col in ("name", "email", "phone"))
    # The piece keeps the term's own case: it goes to ILIKE, whose case folding is PostgreSQL's, not Python's.
    words = [w for w in dict.fromkeys(_WORD.findall(term)) if len(w) >= 3] if has_trigram else []
    if not words:  # fewer than 3 letters in a row: plain trigrams cannot help
        if has_spaced and _NON_ASCII.search(term):
            common = not messages or _share(term.lower(), messages) >= COMMON_SHARE or in_contacts
            return Plan(term, common, spaced=True)
        return Plan(None, True)
    best_share, _, best = min((_share(w.lower(), messages), -len(w), w) for w in words)
    common = not messages or best_share >= COMMON_SHARE or in_contacts
    # A rare word alone keeps the frequent trigrams of the other words out of the GIN scan; when every word
    # is common the whole term is better: its short words (digits...) still add selective trigrams.
    return Plan(best if best_share < COMMON_SHARE else term, common)


async def _pg_stats(session: AsyncSession) -> tuple[Samples, bool, bool]:
    """(pg_stats samples of the searched columns, has the trigram index, has the spaced indexes), cached."""
    conn = await session.connection()
    key = str(conn.engine.url)
    cached = _stats_cache.get(key)
    if cached and time.monotonic() - cached[0] < STATS_TTL:
        return cached[1], cached[2], cached[3]
    indexes = set((await session.scalars(text(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname IN "
        "('ix_messages_text_trgm', 'ix_messages_text_spaced', 'ix_contacts_spaced')"))).all())
    has_trigram = "ix_messages_text_trgm" in indexes
    has_spaced = {"ix_messages_text_spaced", "ix_contacts_spaced"} <= indexes
    rows = (await session.execute(text(
        "SELECT tablename, attname, histogram_bounds::text::text[], most_common_vals::text::text[], "
        "most_common_freqs, null_frac FROM pg_stats WHERE schemaname = current_schema() "
        "AND (tablename, attname) IN (('messages', 'text'), ('contacts', 'name'), ('contacts', 'email'), "
        "('contacts', 'phone'))"))).all()
    samples: Samples = {}
    for table, column, hist, mcv, mcv_freqs, null_frac in rows:
        mcv, mcv_freqs = mcv or [], mcv_freqs or []
        values = [(v.lower(), f) for v, f in zip(mcv, mcv_freqs, strict=False)]
        if hist:
            rest = max(0.0, 1.0 - sum(mcv_freqs) - (null_frac or 0.0)) / len(hist)
            values += [(v.lower(), rest) for v in hist]
        samples[f"{table}.{column}"] = values
    _stats_cache[key] = (time.monotonic(), samples, has_trigram, has_spaced)
    return samples, has_trigram, has_spaced


def _order(cols: Any) -> tuple[Any, Any]:
    return cols.last_activity_at.desc(), cols.id.desc()


async def _walk(session: AsyncSession, conds: Sequence[Any], like: str, want: int, budget: int | None) -> list[int]:
    """Matches among the newest `budget` conversations of the tab (all of them when None), in list order."""
    walk = select(Conversation.id, Conversation.contact_id, Conversation.last_activity_at).where(*conds).order_by(
        *_order(Conversation))
    if budget is not None:
        walk = walk.limit(budget)
    w = walk.subquery("w")
    # LATERAL + LIMIT 1 forces a per-conversation probe through ix_messages_conversation_id_id that stops at
    # the first hit; a plain EXISTS under OR lets the planner hash the whole messages match instead.
    probe = (select(literal(1).label("hit")).where(Message.conversation_id == w.c.id,
                                                  Message.text.ilike(like, escape="\\")).limit(1).lateral("mh"))
    stmt = (select(w.c.id).select_from(w).join(Contact, Contact.id == w.c.contact_id).outerjoin(probe, true())
            .where(or_(probe.c.hit.is_not(None), _contact_match(Contact, like)))
            .order_by(*_order(w.c)).limit(want))
    return list((await session.scalars(stmt)).all())


async def _boundary(session: AsyncSession, conds: Sequence[Any], offset: int) -> tuple[Any, int] | None:
    """The position of the tab's `offset`-th conversation (0-based), None when the tab is shorter."""
    row = (await session.execute(select(Conversation.last_activity_at, Conversation.id).where(*conds)
                                 .order_by(*_order(Conversation)).offset(offset).limit(1))).first()
    return (row[0], row[1]) if row else None


async def _trigram(session: AsyncSession, conds: Sequence[Any], like: str, plan: Plan, want: int) -> list[int] | None:
    """Matches through the trigram indexes, or None when more than TRIGRAM_CAP rows match (term too common).

    One statement: the capped message and contact matches are materialized once, counted, and the page is
    the tab's newest conversations among them (a semi-join: few candidates are fetched by key and sorted,
    many are hashed while the tab's index is walked in order).
    """
    assert plan.piece is not None
    if plan.spaced:
        spaced_like = like_pattern(spaced(plan.piece))
        # The expressions are literal SQL so that they match the indexes' (a bind parameter would not).
        msg_match: list[Any] = [literal_column(SPACED_MESSAGE).ilike(spaced_like, escape="\\"), text(HAS_NON_ASCII)]
        contacts: Any = select(Contact.id).where(literal_column(SPACED_CONTACT).ilike(spaced_like, escape="\\"),
                                                 _contact_match(Contact, like))
    else:
        msg_match = [Message.text.ilike(like_pattern(plan.piece), escape="\\")]
        # One branch per column: an OR of three ILIKEs makes small tables (10k contacts) look cheaper to scan
        # than to look up, and a scan ILIKEs every row three times (measured 17 ms vs 1.7 ms).
        contacts = union(*(select(Contact.id).where(col.ilike(like, escape="\\"))
                           for col in (Contact.name, Contact.email, Contact.phone)))
    # MATERIALIZED keeps the full-term recheck out of the index condition, so only the piece's trigrams
    # are read from the GIN index (a frequent word's posting list costs tens of ms at 1M messages).
    hits = (select(Message.conversation_id, Message.text).where(*msg_match)
            .limit(TRIGRAM_CAP + 1).cte("hits").prefix_with("MATERIALIZED"))
    people = contacts.limit(TRIGRAM_CAP + 1).cte("people").prefix_with("MATERIALIZED")
    by_text = select(hits.c.conversation_id)
    if plan.spaced or like_pattern(plan.piece) != like:
        by_text = by_text.where(hits.c.text.ilike(like, escape="\\"))
    other = aliased(Conversation)
    by_contact = select(other.id).where(other.contact_id.in_(select(people.c.id)))
    page = (select(Conversation.id, Conversation.last_activity_at)
            .where(*conds, Conversation.id.in_(union(by_text, by_contact)))
            .order_by(*_order(Conversation)).limit(want).lateral("page"))
    counts = select(select(func.count()).select_from(hits).scalar_subquery().label("hits"),
                    select(func.count()).select_from(people).scalar_subquery().label("people")).subquery("n")
    rows = (await session.execute(select(counts.c.hits, counts.c.people, page.c.id, page.c.last_activity_at)
                                  .select_from(counts).outerjoin(page, true()))).all()
    if rows[0].hits > TRIGRAM_CAP or rows[0].people > TRIGRAM_CAP:
        return None
    found = sorted(((r.last_activity_at, r.id) for r in rows if r.id is not None), reverse=True)
    return [cid for _, cid in found]


async def matching_ids(session: AsyncSession, conds: Sequence[Any], term: str, want: int) -> list[int]:
    """Up to `want` ids of conversations matching `term` and `conds` (tab filters and cursor), newest first."""
    like = like_pattern(term)
    # Statements are prepared and cached per connection; after five runs PostgreSQL may switch to a generic
    # plan that cannot see the pattern and picks a sequential ILIKE scan of small tables (measured: 4 ms -> 29 ms
    # at 10k contacts). These plans depend on the term, so plan each execution (for this transaction only).
    await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    samples, has_trigram, has_spaced = await _pg_stats(session)
    plan = plan_for(term, samples, has_trigram, has_spaced)
    after: list[Any] = []
    found: list[int] = []
    if plan.common or plan.piece is None:
        found = await _walk(session, conds, like, want, WALK_BUDGET)
        if len(found) >= want:
            return found
        edge = await _boundary(session, conds, WALK_BUDGET - 1)
        if edge is None:  # the walk saw the whole tab
            return found
        after = [tuple_(Conversation.last_activity_at, Conversation.id) < tuple_(*edge)]
        if len(found) >= WALK_BUDGET * WALK_ON_SHARE:
            return found + await _walk(session, [*conds, *after], like, want - len(found), None)
    if plan.piece is None:
        # No index can help (a short ASCII term, or no pg_trgm): let the planner scan. Walking the rest of a
        # large tab probe by probe is slower than one parallel scan of the messages when the term is rare.
        stmt = (select(Conversation.id).where(*conds, *after, text_condition(term)).order_by(*_order(Conversation))
                .limit(want - len(found)))
        return found + list((await session.scalars(stmt)).all())
    rest = await _trigram(session, [*conds, *after], like, plan, want - len(found))
    if rest is not None:
        return found + rest
    # More than TRIGRAM_CAP matches overall but few in this tab: walking it is bounded by the tab's size.
    return found + await _walk(session, [*conds, *after], like, want - len(found), None)


async def search_condition(session: AsyncSession, conds: Sequence[Any], term: str, want: int) -> ColumnElement[bool]:
    """The condition to add to the list query for `term`: tuned id lookup on PostgreSQL, plain LIKE elsewhere."""
    if (await session.connection()).dialect.name != "postgresql":
        return text_condition(term)
    return Conversation.id.in_(await matching_ids(session, conds, term, want))
