"""Bulk actions on conversations from the inbox list: assign, label, resolve, snooze, reopen.

Each conversation is changed in its own transaction through the same verbs as one at a time, so one
that cannot change (gone, refused) does not undo the others; the answer says which failed and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from scrm.db.models import ConversationLabel
from scrm.services.conversations import actions as conv_svc
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

MAX_IDS = 100


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] = Field(min_length=1, max_length=MAX_IDS)
    action: Literal["assign", "label", "unlabel", "resolve", "reopen", "snooze"]
    assignee_id: int | None = Field(None, description="assign: the agent (null unassigns)")
    label: str | None = Field(None, min_length=1, max_length=64, description="label / unlabel")
    snoozed_until: datetime | None = Field(None, description="snooze: until when (with a time zone offset)")

    @model_validator(mode="after")
    def _needs(self) -> BulkIn:
        if self.action in ("label", "unlabel") and not (self.label and self.label.strip()):
            raise ValueError(f"{self.action} needs a label")
        if self.action == "snooze" and (self.snoozed_until is None or self.snoozed_until.tzinfo is None):
            raise ValueError("snooze needs snoozed_until with a time zone offset")
        if self.action == "assign" and "assignee_id" not in self.model_fields_set:
            raise ValueError("assign needs assignee_id (null unassigns)")
        return self


async def _label(tx: Tx, cid: int, agent_id: int, label: str, add: bool) -> None:
    current = list((await tx.session.scalars(select(ConversationLabel.label)
                                             .where(ConversationLabel.conversation_id == cid))).all())
    wanted = sorted({*current, label}) if add else [x for x in current if x != label]
    if sorted(current) != wanted:
        await conv_svc.do_update(tx, cid, agent_id, labels=wanted)


async def _one(tx: Tx, cid: int, agent_id: int, body: BulkIn) -> None:
    if body.action == "assign":
        await conv_svc.do_assign(tx, cid, agent_id, body.assignee_id)
    elif body.action in ("label", "unlabel"):
        await _label(tx, cid, agent_id, (body.label or "").strip(), body.action == "label")
    elif body.action == "resolve":
        await conv_svc.do_set_status(tx, cid, agent_id, "resolved")
    elif body.action == "reopen":
        await conv_svc.do_set_status(tx, cid, agent_id, "open")
    elif body.action == "snooze":
        await conv_svc.do_set_status(tx, cid, agent_id, "snoozed", body.snoozed_until)


async def do_bulk(ctx: AppContext, agent_id: int, body: BulkIn) -> dict[str, Any]:
    """Apply the action to every conversation; returns {"done": [ids], "failed": [{id, error}]}."""
    done: list[int] = []
    failed: list[dict[str, Any]] = []
    for cid in _unique(body.ids):
        try:
            async with unit_of_work(ctx) as tx:
                await _one(tx, cid, agent_id, body)
            done.append(cid)
        except conv_svc.ConversationError as exc:
            failed.append({"id": cid, "code": exc.code, "error": str(exc)})
    return {"done": done, "failed": failed}


def _unique(ids: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(ids))
