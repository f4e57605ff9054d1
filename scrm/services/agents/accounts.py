"""Agents, passwords (argon2id), login sessions and personal API tokens."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from scrm.db.models import Agent, AgentSession, ApiToken, utcnow
from scrm.domain import Role

_hasher = PasswordHasher()  # argon2id, memory-hard
# Verifying against a dummy hash when the login is unknown keeps timing equal (no user enumeration).
_DUMMY_HASH = _hasher.hash("dummy-password-for-timing")
TOKEN_PREFIX = "scrm_pat_"
MIN_PASSWORD = 8


class AgentError(ValueError):
    """A request about agents that cannot be honoured (message is shown to the user)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an agent, authenticated by session cookie or bearer token."""

    agent_id: int
    login: str
    role: str
    display_name: str
    via: str  # "session" | "token"
    csrf_token: str | None = None


# argon2 takes ~0.2 s of CPU and memory by design: it runs in the default thread pool (argon2-cffi
# releases the GIL), never on the event loop, where it would stall every other request meanwhile.


async def hash_password(password: str) -> str:
    """The argon2id hash of a new password (checked for length), computed off the event loop."""
    if len(password) < MIN_PASSWORD:
        raise AgentError(f"password must have at least {MIN_PASSWORD} characters")
    return await asyncio.to_thread(_hasher.hash, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Check a password against its stored hash (or a dummy one: equal timing), off the event loop."""
    return await asyncio.to_thread(_verify, stored, password)


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


async def create_agent(
    s: AsyncSession, *, login: str, password: str, role: str, display_name: str | None = None,
    email: str | None = None,
) -> Agent:
    """Add an agent (validates role, login uniqueness and password length)."""
    if role not in {r.value for r in Role}:
        raise AgentError(f"role must be one of admin, agent, marketer (got {role!r})")
    login = login.strip()
    if not login:
        raise AgentError("login must not be empty")
    if await s.scalar(select(Agent.id).where(Agent.login == login)):
        raise AgentError(f"login {login!r} is taken")
    agent = Agent(login=login, password_hash=await hash_password(password), role=role,
                  display_name=display_name or login, email=email, active=True, availability="online")
    s.add(agent)
    await s.flush()
    return agent


async def authenticate(s: AsyncSession, login: str, password: str) -> Agent | None:
    """The active agent with these credentials, or None.

    Call it in a read session: the hash check takes a while and must not hold the write lock.
    """
    agent = await s.scalar(select(Agent).where(Agent.login == login))
    ok = await verify_password(agent.password_hash if agent else None, password)
    if not ok or agent is None or not agent.active:
        return None
    return agent


def needs_rehash(agent: Agent) -> bool:
    """True when the stored hash uses weaker parameters than today's (rehash on the next login)."""
    return _hasher.check_needs_rehash(agent.password_hash)


async def revoke_credentials(s: AsyncSession, agent_id: int, *, keep_session: str | None = None,
                             tokens: bool = True) -> tuple[int, int]:
    """End every login session of an agent (but `keep_session`, a raw cookie) and revoke its API tokens.

    Rows are deleted or marked revoked, not merely hidden behind `active`, so reactivating the agent
    later does not bring any of them back. Returns (sessions ended, tokens revoked).
    """
    stmt = delete(AgentSession).where(AgentSession.agent_id == agent_id)
    if keep_session is not None:
        stmt = stmt.where(AgentSession.token_hash != token_hash(keep_session))
    ended = (await s.execute(stmt)).rowcount or 0  # type: ignore[attr-defined]  # DML: a CursorResult
    revoked = 0
    if tokens:
        revoked = (await s.execute(
            update(ApiToken).where(ApiToken.agent_id == agent_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )).rowcount or 0  # type: ignore[attr-defined]  # DML: a CursorResult
    return int(ended), int(revoked)


async def open_session(s: AsyncSession, agent: Agent, ttl_hours: float) -> tuple[str, str]:
    """Create a login session; returns (cookie token, CSRF token). Only hashes are stored."""
    raw = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    s.add(AgentSession(token_hash=token_hash(raw), agent_id=agent.id, csrf_token=csrf,
                       expires_at=utcnow() + timedelta(hours=ttl_hours)))
    agent.last_seen_at = utcnow()
    await s.flush()
    return raw, csrf


async def principal_from_session(s: AsyncSession, raw: str) -> Principal | None:
    row = (await s.execute(
        select(AgentSession, Agent).join(Agent, Agent.id == AgentSession.agent_id)
        .where(AgentSession.token_hash == token_hash(raw))
    )).first()
    if row is None:
        return None
    sess, agent = row
    if sess.expires_at <= utcnow() or not agent.active:
        return None
    return Principal(agent.id, agent.login, agent.role, agent.display_name, "session", sess.csrf_token)


async def close_session(s: AsyncSession, raw: str) -> None:
    sess = await s.scalar(select(AgentSession).where(AgentSession.token_hash == token_hash(raw)))
    if sess is not None:
        await s.delete(sess)


async def create_token(s: AsyncSession, agent: Agent, name: str) -> tuple[ApiToken, str]:
    """A personal API token; the raw value is returned once and never stored."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(agent_id=agent.id, name=name or "token", token_hash=token_hash(raw), prefix=raw[:13])
    s.add(token)
    await s.flush()
    return token, raw


async def principal_from_token(s: AsyncSession, raw: str) -> Principal | None:
    row = (await s.execute(
        select(ApiToken, Agent).join(Agent, Agent.id == ApiToken.agent_id)
        .where(ApiToken.token_hash == token_hash(raw), ApiToken.revoked_at.is_(None))
    )).first()
    if row is None or not row[1].active:
        return None
    _, agent = row
    return Principal(agent.id, agent.login, agent.role, agent.display_name, "token")


async def update_own(tx: Any, agent_id: int, changes: dict[str, Any]) -> Agent:
    """An agent's own availability, display name, language or time zone."""
    agent = await tx.session.get(Agent, agent_id)
    assert agent is not None, "a signed-in agent exists"
    for name in ("availability", "display_name", "language", "timezone"):
        if name in changes:
            setattr(agent, name, changes[name])
    tx.emit("agent.updated", agent_id=agent.id, availability=agent.availability)
    return agent


async def admin_update(tx: Any, agent_id: int, changes: dict[str, Any],
                       new_hash: str | None) -> tuple[Agent, tuple[int, int] | None] | None:
    """An admin's change of role, active, display name or password; None when there is no such agent.

    A reset or a deactivation answers a leaver or a leaked password: every session and API token of the
    agent ends now (returned as counts), and reactivation later does not bring them back."""
    agent = await tx.session.get(Agent, agent_id)
    if agent is None:
        return None
    for name in ("role", "active", "display_name"):
        if changes.get(name) is not None:
            setattr(agent, name, changes[name])
    revoked = None
    if new_hash is not None:
        agent.password_hash = new_hash
    if new_hash is not None or changes.get("active") is False:
        revoked = await revoke_credentials(tx.session, agent_id)
    return agent, revoked
