"""Login, logout, the current agent, personal API tokens, and agent management (admin)."""

from __future__ import annotations

import logging
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select
from yarl import URL

from scrm.db.models import Agent, ApiToken, utcnow
from scrm.serializers import agent_json
from scrm.services.agents import accounts as agent_svc
from scrm.services.agents import audit
from scrm.services.agents.accounts import Principal
from scrm.services.uow import unit_of_work
from scrm.settings import SecuritySettings
from scrm.web.keys import CTX, SESSION_COOKIE
from scrm.web.routing import ADMIN, ALL_ROLES, ApiError, api, ok, path_int

log = logging.getLogger("scrm.auth")


class LoginIn(BaseModel):
    login: str = Field(min_length=1, max_length=120)
    password: str = Field(min_length=1, max_length=1024)


def _login_guard(request: web.Request) -> None:
    """Login CSRF: a JSON body only (a cross-site form cannot send one without a CORS preflight, which
    we never grant) and, when the browser says where the request comes from, only from this site."""
    if request.content_type != "application/json":
        log.warning("login refused: Content-Type %r from %s", request.content_type[:60], request.remote)
        raise ApiError(415, "login needs Content-Type: application/json", "unsupported_media_type")
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, request, request.app[CTX].settings.server.public_url):
        log.warning("login refused: cross-site Origin %r from %s", origin[:120], request.remote)
        raise ApiError(403, "login from another site is refused (Origin does not match this server)", "cross_origin")


def same_origin(origin: str, request: web.Request, public_url: str | None) -> bool:
    """Whether an Origin header names this server: its public URL, or the host the browser addressed."""
    try:
        url = URL(origin)
    except ValueError:
        return False
    if not url.scheme or not url.host:  # "null": sandboxed frames, file:// pages, privacy redirects
        return False
    if public_url:
        public = URL(public_url)
        if (url.scheme, url.host, url.port) == (public.scheme, public.host, public.port):
            return True
    # The Host header is the address the victim's browser used: a page elsewhere cannot make the
    # browser send an Origin with this host. The scheme is not compared (TLS may end at a proxy).
    return url.raw_authority.lower() == request.host.lower() or f"{url.host}:{url.port}" == request.host.lower()


@api("POST", "/auth/login", roles=None, body=LoginIn, guard=_login_guard, tag="auth",
     summary="Log in: sets the session cookie, returns the CSRF token (JSON only, same origin)")
async def login(request: web.Request, principal: Principal | None, body: LoginIn) -> web.Response:
    ctx = request.app[CTX]
    sec = ctx.settings.security
    key = f"login:{body.login.lower()}:{request.remote}"
    # Counted before the password is checked, in one atomic step (Redis INCR across processes): of
    # many parallel guesses only the first `login_attempts` reach the hash check.
    if await ctx.counter.hit(key, sec.login_window_seconds) > sec.login_attempts:
        log.warning("login rate limited for %r from %s", body.login[:120], request.remote)
        raise ApiError(429, "too many failed logins; try again later", "rate_limited")
    async with ctx.db.session() as s:  # a read session: the slow hash check holds no write lock
        found = await agent_svc.authenticate(s, body.login, body.password)
    if found is None:
        raise ApiError(401, "wrong login or password", "bad_credentials")
    async with unit_of_work(ctx) as tx:
        agent = await tx.session.get(Agent, found.id)
        if agent is None or not agent.active:  # deactivated while the password was being checked
            raise ApiError(401, "wrong login or password", "bad_credentials")
        if agent_svc.needs_rehash(agent):
            agent.password_hash = await agent_svc.hash_password(body.password)
        raw, csrf = await agent_svc.open_session(tx.session, agent, sec.session_ttl_hours)
        audit.record(tx, agent.id, "agent.login", "agent", agent.id, remote=request.remote)
    await ctx.counter.reset(key)
    return _with_session(ok({"agent": agent_json(agent), "csrf_token": csrf}), raw, sec)


def _with_session(resp: web.Response, raw: str, sec: SecuritySettings) -> web.Response:
    resp.set_cookie(SESSION_COOKIE, raw, httponly=True, samesite="Lax", secure=sec.cookie_secure, path="/",
                    max_age=int(sec.session_ttl_hours * 3600))
    return resp


@api("POST", "/auth/logout", roles=ALL_ROLES, summary="Log out (ends the session)", tag="auth")
async def logout(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    raw = request.cookies.get(SESSION_COOKIE)
    if raw:
        async with unit_of_work(ctx) as tx:
            await agent_svc.close_session(tx.session, raw)
    resp = ok({"ok": True})
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


@api("POST", "/auth/logout-all", roles=ALL_ROLES, tag="auth",
     summary="Sign out everywhere: ends every login session of mine, this one included (API tokens stay)")
async def logout_everywhere(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with unit_of_work(ctx) as tx:
        ended, _ = await agent_svc.revoke_credentials(tx.session, principal.agent_id, tokens=False)
        audit.record(tx, principal.agent_id, "agent.logout_all", "agent", principal.agent_id, sessions=ended)
    resp = ok({"ok": True, "sessions_ended": ended})
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


@api("POST", "/me/password", roles=ALL_ROLES, body=PasswordChange, tag="auth",
     summary="Change my password (current one required): a new session here, my other sessions end")
async def change_password(request: web.Request, principal: Principal, body: PasswordChange) -> web.Response:
    ctx = request.app[CTX]
    sec = ctx.settings.security
    # Guesses at the current password through this form count like login attempts.
    key = f"password:{principal.agent_id}"
    if await ctx.counter.hit(key, sec.login_window_seconds) > sec.login_attempts:
        raise ApiError(429, "too many wrong passwords; try again later", "rate_limited")
    async with ctx.db.session() as s:
        agent = await s.get(Agent, principal.agent_id)
        stored = agent.password_hash if agent else None
    if not await agent_svc.verify_password(stored, body.current_password):
        log.warning("password change refused for agent %s: wrong current password", principal.agent_id)
        raise ApiError(403, "the current password is wrong", "bad_credentials")
    try:
        new_hash = await agent_svc.hash_password(body.new_password)
    except agent_svc.AgentError as exc:
        raise ApiError(400, str(exc), "bad_password") from None
    async with unit_of_work(ctx) as tx:
        agent = await tx.session.get(Agent, principal.agent_id)
        assert agent is not None
        agent.password_hash = new_hash
        # Every session ends, this one too: the caller gets a fresh cookie (session rotation), so a
        # session cookie stolen before the change is worth nothing after it.
        ended, _ = await agent_svc.revoke_credentials(tx.session, agent.id, tokens=False)
        raw, csrf = await agent_svc.open_session(tx.session, agent, sec.session_ttl_hours)
        audit.record(tx, agent.id, "agent.password_change", "agent", agent.id, sessions=ended)
    await ctx.counter.reset(key)
    return _with_session(ok({"ok": True, "csrf_token": csrf}), raw, sec)


@api("GET", "/me", roles=ALL_ROLES, summary="The current agent (and the CSRF token for cookie sessions)", tag="auth")
async def me(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        agent = await s.get(Agent, principal.agent_id)
    assert agent is not None
    return ok({"agent": agent_json(agent), "csrf_token": principal.csrf_token,
               "display": {"timezone": agent.timezone or ctx.settings.display.timezone,
                           "language": agent.language or ctx.settings.display.language}})


class MePatch(BaseModel):
    availability: Literal["online", "away", "offline"] | None = None
    display_name: str | None = Field(None, min_length=1, max_length=120)
    language: Literal["zh", "en"] | None = None
    timezone: str | None = Field(None, max_length=64)


@api("PATCH", "/me", roles=ALL_ROLES, body=MePatch, summary="Set availability, name, language, time zone", tag="auth")
async def update_me(request: web.Request, principal: Principal, body: MePatch) -> web.Response:
    ctx = request.app[CTX]
    async with unit_of_work(ctx) as tx:
        agent = await agent_svc.update_own(tx, principal.agent_id, body.model_dump(exclude_unset=True))
    return ok({"agent": agent_json(agent)})


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=120)


@api("POST", "/tokens", roles=ALL_ROLES, body=TokenIn, summary="Create a personal API token (shown once)", tag="auth")
async def create_token(request: web.Request, principal: Principal, body: TokenIn) -> web.Response:
    ctx = request.app[CTX]
    async with unit_of_work(ctx) as tx:
        agent = await tx.session.get(Agent, principal.agent_id)
        assert agent is not None
        token, raw = await agent_svc.create_token(tx.session, agent, body.name)
        audit.record(tx, agent.id, "token.create", "api_token", token.id)
    return ok({"id": token.id, "name": token.name, "token": raw}, 201)


@api("GET", "/tokens", roles=ALL_ROLES, summary="List my API tokens (values are never shown again)", tag="auth")
async def list_tokens(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        rows = (await s.scalars(select(ApiToken).where(ApiToken.agent_id == principal.agent_id,
                                                       ApiToken.revoked_at.is_(None)))).all()
    return ok({"items": [{"id": t.id, "name": t.name, "prefix": t.prefix, "created_at": t.created_at.isoformat()}
                         for t in rows]})


@api("DELETE", "/tokens/{id}", roles=ALL_ROLES, summary="Revoke one of my API tokens", tag="auth")
async def revoke_token(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with unit_of_work(ctx) as tx:
        token = await tx.session.get(ApiToken, path_int(request, "id"))
        if token is None or token.agent_id != principal.agent_id:
            raise ApiError(404, "token not found", "not_found")
        token.revoked_at = utcnow()
    return ok({"ok": True})


@api("GET", "/agents", roles=ALL_ROLES, summary="List agents (for assignment)", tag="agents")
async def list_agents(request: web.Request, principal: Principal) -> web.Response:
    ctx = request.app[CTX]
    async with ctx.db.session() as s:
        rows = (await s.scalars(select(Agent).order_by(Agent.display_name))).all()
    return ok({"items": [agent_json(a) for a in rows]})


class AgentIn(BaseModel):
    login: str = Field(min_length=1, max_length=120)
    password: str = Field(min_length=8, max_length=1024)
    role: Literal["admin", "agent", "marketer"] = "agent"
    display_name: str | None = Field(None, max_length=120)
    email: str | None = Field(None, max_length=255)


@api("POST", "/agents", roles=ADMIN, body=AgentIn, summary="Invite an agent", tag="agents")
async def create_agent(request: web.Request, principal: Principal, body: AgentIn) -> web.Response:
    ctx = request.app[CTX]
    try:
        async with unit_of_work(ctx) as tx:
            agent = await agent_svc.create_agent(tx.session, login=body.login, password=body.password, role=body.role,
                                                 display_name=body.display_name, email=body.email)
            audit.record(tx, principal.agent_id, "agent.create", "agent", agent.id, role=body.role)
    except agent_svc.AgentError as exc:
        raise ApiError(400, str(exc), "bad_agent") from None
    return ok(agent_json(agent), 201)


class AgentPatch(BaseModel):
    role: Literal["admin", "agent", "marketer"] | None = None
    active: bool | None = None
    display_name: str | None = Field(None, min_length=1, max_length=120)
    password: str | None = Field(None, min_length=8, max_length=1024)


@api("PATCH", "/agents/{id}", roles=ADMIN, body=AgentPatch, summary="Change role, deactivate, reset password",
     tag="agents")
async def update_agent(request: web.Request, principal: Principal, body: AgentPatch) -> web.Response:
    ctx = request.app[CTX]
    aid = path_int(request, "id")
    if aid == principal.agent_id and (body.active is False or (body.role and body.role != "admin")):
        raise ApiError(400, "you cannot deactivate or demote yourself", "self_change")
    new_hash = await agent_svc.hash_password(body.password) if body.password else None
    async with unit_of_work(ctx) as tx:
        updated = await agent_svc.admin_update(tx, aid, body.model_dump(include={"role", "active", "display_name"}),
                                               new_hash)
        if updated is None:
            raise ApiError(404, "agent not found", "not_found")
        agent, revoked = updated
        audit.record(tx, principal.agent_id, "agent.update", "agent", aid,
                     fields=sorted(k for k in body.model_dump(exclude_unset=True) if k != "password"),
                     **({"sessions_ended": revoked[0], "tokens_revoked": revoked[1]} if revoked else {}))
    return ok(agent_json(agent))
