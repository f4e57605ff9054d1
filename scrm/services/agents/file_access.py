"""Who may fetch a stored file (/files/<key>): the key alone is no longer enough.

- admins: any file;
- the agent who uploaded it (a reply attachment before it is sent);
- agents: a file carried by a message (hence its conversation and tickets) in an inbox they see;
- marketers: only files they uploaded (broadcasts carry no media today).
Keys are random (uuid4), so a message carrying one is found by its attachments' text, newest first:
files are fetched mostly right after their message arrived, so the scan stops early.
"""

from __future__ import annotations

from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models import Message
from scrm.db.models_access import FileUpload
from scrm.services.agents import inbox_access
from scrm.services.agents.accounts import Principal


async def may_fetch(s: AsyncSession, principal: Principal, key: str) -> bool:
    """Whether `principal` may read the file stored under `key` (a key already validated by the storage)."""
    if principal.role == "admin":
        return True
    upload = await s.get(FileUpload, key)
    if upload is not None and upload.agent_id == principal.agent_id:
        return True
    if principal.role != "agent":
        return False
    # The key is [0-9a-f/.A-Za-z]: no LIKE wildcards in it. Quoted, so a key never matches a longer one.
    carried = cast(Message.attachments, Text).like(f'%"{key}"%')
    ids = inbox_access.scope(principal)
    stmt = select(Message.id).where(carried, *([] if ids is None else [Message.inbox_id.in_(ids)]))
    return await s.scalar(stmt.order_by(Message.id.desc()).limit(1)) is not None


async def record_upload(s: AsyncSession, agent_id: int, key: str) -> None:
    """Remember who uploaded `key` (they may fetch it before any message carries it)."""
    s.add(FileUpload(storage_key=key, agent_id=agent_id))
