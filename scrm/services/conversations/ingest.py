"""The ingest service: the single sink every channel calls.

For each InboundMessage, in one transaction: dedup (inbox + external id), identity -> contact,
find or open the conversation, store the message, update timestamps. Events are published after
commit. A concurrent duplicate loses the unique-constraint race and is retried, then seen as a
duplicate, so 20 identical posts store one message.

The modules, each importing only those listed after it (tests/core/test_ingest_layers.py):
  ingest (this entry point) -> ingest_batch (group commit, set-based batches) -> ingest_pg (PostgreSQL:
  the batch in one database function call) -> ingest_one (one item per transaction) -> ingest_events
  (channel events) -> ingest_identity (who wrote) -> ingest_writes (set-based statements) ->
  ingest_rules (the rules, no database) -> inbound_clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from scrm.db.models import Inbox
from scrm.domain import ChannelEvent, InboundMessage, IngestOutcome
from scrm.services.conversations.inbound_clean import clean_items
from scrm.services.conversations.ingest_batch import GroupCommit
from scrm.services.conversations.ingest_identity import resolve_identity
from scrm.services.conversations.ingest_one import ingest_each
from scrm.services.conversations.ingest_rules import continuable, new_conversation

if TYPE_CHECKING:
    from scrm.context import AppContext

# Used by other services (contacts from WeCom and WeChat followers, WeCom conversations).
__all__ = ["continuable", "group_commit", "ingest", "new_conversation", "resolve_identity"]


async def ingest(ctx: AppContext, inbox: Inbox, items: Sequence[InboundMessage | ChannelEvent]) -> list[IngestOutcome]:
    """Store every item exactly once; returns one outcome per item, after the commit that stored it.

    Messages go through the process's group commit (concurrent requests share a transaction);
    requests that carry channel events are stored item by item, in order. Values no database can
    store (NUL characters, unpaired surrogates, ...) are cleaned first (inbound_clean.py).
    """
    items = clean_items(items)
    if items and all(isinstance(item, InboundMessage) for item in items):
        return await group_commit(ctx).submit(inbox, list(items))  # type: ignore[arg-type]
    return await ingest_each(ctx, inbox, items)


def group_commit(ctx: AppContext) -> GroupCommit:
    """The process's group commit (one per context)."""
    batcher = ctx.extras.get("group_commit")
    if batcher is None:
        batcher = ctx.extras["group_commit"] = GroupCommit(ctx)
    return batcher
