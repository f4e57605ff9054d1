"""A local fake of qyapi.weixin.qq.com speaking the real JSON: tokens, 微信客服 and media (127.0.0.1 only).

Answers are built from the shared fixtures' shapes; errors use the fixtures' bodies where a sample
exists (95018, 45009, 42001, 40014). Customer contacts (客户联系) live in fake_wecom_contacts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.channels.wecom.fake_wecom_contacts import ContactsState, add_contact_routes
from tests.channels.wecom.wecom_samples import CONTACTS_SECRET, CORP_ID, OPEN_KFID, SECRET, sample

ERROR_SAMPLES = {95018: "kf_send_msg__error_95018_session_status_invalid.json",
                 45009: "common__error_45009_api_freq_out_of_limit.json",
                 42001: "getcallbackip__error_42001_access_token_expired_docs.json",
                 40014: "common__error_40014_invalid_access_token.json",
                 40007: "media_get__error_40007_invalid_media_id.json"}
# Codes without a public sample; their messages here are ours. 95007 and the repeated-msgid code are
# not documented publicly (PROTOCOL.md): the client must not depend on them.
ERRMSG = {95007: "invalid msg token", 95001: "send msg count limit", 40058: "invalid msgid, repeated",
          95014: "servicer not activated", 40096: "invalid external userid", 41051: "welcome code used",
          40001: "invalid secret", 95000: "invalid open_kfid"}


def error(code: int) -> web.Response:
    body = sample(ERROR_SAMPLES[code]) if code in ERROR_SAMPLES else {"errcode": code, "errmsg": ERRMSG.get(code, "error")}
    return web.json_response(body)


@dataclass
class FakeWeCom:
    corp_id: str = CORP_ID
    secrets: set[str] = field(default_factory=lambda: {SECRET, CONTACTS_SECRET})
    expires_in: int = 7200
    token_fetches: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    # 微信客服: one message log per open_kfid; a cursor is an index into it
    log: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    page_size: int = 50
    page_sizes: list[int] = field(default_factory=list)  # the next pages' sizes (then page_size)
    raw_pages: list[dict[str, Any]] = field(default_factory=list)  # served verbatim before the log
    empty_pages_with_more: int = 0  # the next N pages are empty but say has_more=1
    sync_requests: list[dict[str, Any]] = field(default_factory=list)
    sync_delays: list[float] = field(default_factory=list)  # the next sync_msg answers wait this long
    callback_tokens: set[str] = field(default_factory=set)
    sends: list[dict[str, Any]] = field(default_factory=list)  # accepted kf/send_msg bodies
    send_attempts: list[dict[str, Any]] = field(default_factory=list)  # every kf/send_msg body
    event_sends: list[dict[str, Any]] = field(default_factory=list)
    codes: dict[str, str] = field(default_factory=dict)  # event code -> kind (single use)
    states: dict[tuple[str, str], tuple[int, str | None]] = field(default_factory=dict)
    trans_requests: list[dict[str, Any]] = field(default_factory=list)
    ops: list[tuple[str, Any]] = field(default_factory=list)  # sends and state changes, in order
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    batchget_requests: list[list[str]] = field(default_factory=list)
    contact_ways: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    uploads: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    media_limit: int = 20 * 1024 * 1024  # a plain media/get of a bigger file answers 830002 (use Range)
    media_ranges: list[str] = field(default_factory=list)  # Range headers of media/get calls, in order
    errors: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    garbage: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # next N answers: not JSON
    canned: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))  # verbatim answers
    requests: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    contacts: ContactsState = field(default_factory=ContactsState)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # -- helpers for tests ------------------------------------------------------------------

    def fail_next(self, path: str, *codes: int) -> None:
        """The next calls to /cgi-bin/<path> answer these errcodes, in order."""
        self.errors[path].extend(codes)

    def add(self, *items: dict[str, Any], open_kfid: str = OPEN_KFID) -> None:
        """Customer activity WeCom would return from kf/sync_msg; a customer's message after the end of
        their session starts a new one in 未处理 (PROTOCOL.md §4: 4 → 0)."""
        self.log[open_kfid].extend(items)
        for item in items:
            key = (open_kfid, str(item.get("external_userid") or ""))
            if item.get("origin", 3) == 3 and self.states.get(key, (0, None))[0] == 4:
                self.states[key] = (0, None)

    def new_callback_token(self) -> str:
        token = f"ENC{next(self._ids):08d}SYNCTOKEN"
        self.callback_tokens.add(token)
        return token

    def issue_code(self, kind: str) -> str:
        code = f"CODE-{kind}-{next(self._ids)}"
        self.codes[code] = kind
        return code

    def state(self, customer: str, open_kfid: str = OPEN_KFID) -> int:
        return self.states.get((open_kfid, customer), (0, None))[0]

    # -- app ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        for name in ("kf/sync_msg", "kf/send_msg", "kf/send_msg_on_event", "kf/service_state/get",
                     "kf/service_state/trans", "kf/customer/batchget", "kf/add_contact_way", "kf/account/list"):
            app.router.add_post(f"/cgi-bin/{name}", getattr(self, "_" + name.replace("/", "_")))
        app.router.add_get("/cgi-bin/kf/servicer/list", self._kf_servicer_list)
        app.router.add_post("/cgi-bin/media/upload", self._upload)
        app.router.add_get("/cgi-bin/media/get", self._media_get)
        add_contact_routes(app, self)
        return app

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.token_fetches += 1
        if request.query.get("corpid") != self.corp_id:
            return web.json_response({"errcode": 40013, "errmsg": "invalid corpid"})
        if request.query.get("corpsecret") not in self.secrets:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        answer = sample("gettoken__response.json")
        answer["access_token"] = f"accesstoken{next(self._ids):06d}"
        answer["expires_in"] = self.expires_in
        self.valid_tokens.add(answer["access_token"])
        return web.json_response(answer)

    async def check(self, request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        """(JSON body, None) for a good call, or (None, the error answer)."""
        path = request.path.removeprefix("/cgi-bin/")
        if self.garbage[path] > 0:
            self.garbage[path] -= 1
            return None, web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if request.query.get("access_token") not in self.valid_tokens:
            return None, error(40014)
        if self.errors[path]:
            return None, error(self.errors[path].pop(0))
        body = json.loads(await request.read() or b"{}") if request.method == "POST" else dict(request.query)
        self.requests[path].append(body)
        if self.canned[path]:
            return None, web.json_response(self.canned[path].pop(0))
        return body, None

    # -- 微信客服 ------------------------------------------------------------------------------

    async def _kf_sync_msg(self, request: web.Request) -> web.Response:
        body, refused = await self.check(request)
        if refused is not None:
            return refused
        assert body is not None
        self.sync_requests.append(body)
        if self.sync_delays:
            await asyncio.sleep(self.sync_delays.pop(0))
        token = body.get("token")
        if token is not None and token not in self.callback_tokens:
            return error(95007)
        if self.raw_pages:
            return web.json_response(self.raw_pages.pop(0))
        kfid = body.get("open_kfid")
        if not kfid:
            return web.json_response({"errcode": 95000, "errmsg": "invalid open_kfid"})
        start = int(body.get("cursor") or 0)
        if self.empty_pages_with_more:
            self.empty_pages_with_more -= 1
            return web.json_response({"errcode": 0, "errmsg": "ok", "next_cursor": str(start), "has_more": 1,
                                      "msg_list": []})
        size = self.page_sizes.pop(0) if self.page_sizes else self.page_size
        size = min(size, int(body.get("limit") or 1000))
        items = self.log[kfid][start:start + size]
        end = start + len(items)
        return web.json_response({"errcode": 0, "errmsg": "ok", "next_cursor": str(end),
                                  "has_more": 1 if end < len(self.log[kfid]) else 0, "msg_list": items})

    def _customer_wrote_since(self, kfid: str, customer: str) -> int:
        """Sends since the customer's last message (WeCom: at most 5)."""
        last = max((i for i, m in enumerate(self.log[kfid]) if m.get("external_userid") == customer
                    and m.get("origin", 3) == 3), default=-1)
        return sum(1 for s in self.sends if s["touser"] == customer and s.get("_after", -1) >= last)

    async def _kf_send_msg(self, request: web.Request) -> web.Response:
        body, refused = await self.check(request)
        if refused is not None:
            return refused
        assert body is not None
        self.send_attempts.append(body)
        kfid, customer = body.get("open_kfid", ""), body.get("touser", "")
        msgid = body.get("msgid")
        if msgid and any(s.get("msgid") == msgid and s["open_kfid"] == kfid for s in self.sends):
            return error(40058)
        if self.state(customer, kfid) not in (0, 1):
            return error(95018)
        if self._customer_wrote_since(kfid, customer) >= 5:
            return error(95001)
        self.sends.append(body | {"_after": len(self.log[kfid]) - 1})
        self.ops.append(("send", body.get("msgtype")))
        answer = sample("kf_send_msg__response.json")
        answer["msgid"] = msgid or f"MSG{next(self._ids)}"
        return web.json_response(answer)

    async def _kf_send_msg_on_event(self, request: web.Request) -> web.Response:
        body, refused = await self.check(request)
        if refused is not None:
            return refused
        assert body is not None
        code = body.get("code")
        if code not in self.codes:
            return web.json_response({"errcode": 95016, "errmsg": "invalid code"})  # message ours: no sample
        self.event_sends.append(body | {"_kind": self.codes.pop(code)})
        return web.json_response(sample("kf_send_msg_on_event__response.json") | {"msgid": body.get("msgid", "")})

    async def _kf_service_state_get(self, request: web.Request) -> web.Response:
        body, refused = await self.check(request)
        if refused is not None:
            return refused
        assert body is not None
        state, servicer = self.states.get((body["open_kfid"], body["external_userid"]), (0, None))
        answer = sample("kf_service_state_get__response.json") | {"service_state": state,
                                                                  "servicer_userid": servicer or ""}
        return web.json_response(answer)

    async def _kf_service_state_trans(self, request: web.Request) -> web.Response:
        body, refused = await self.check(request)
        if refused is not None:
            return refused
        assert body is not None
        self.trans_requests.append(body)
        key = (body["open_kfid"], body["external_userid"])
        target, servicer = int(body["service_state"]), body.get("servicer_userid")
        if target == 3 and not servicer:
            return web.json_response({"errcode": 95014, "errmsg": ERRMSG[95014]})
        before = self.states.get(key, (0, None))[0]
        self.states[key] = (target, servicer if target == 3 else None)
        self.ops.append(("trans", target))
        answer = sample("kf_service_state_trans__response.json")
        if target == 4 or (target in (2, 3) and before not in (2, 3)):
            answer["msg_code"] = self.issue_code({2: "pool", 3: "taken", 4: "closing"}[target])
        else:
            answer.pop("msg_code", None)
        return web.json_response(answer)

    async def _kf_customer_batchget(self, request: web.Request) -> web.Response:
        body, refused = await self.check(request)
        if refused is not None:
            return refused
        assert body is not None
        ids = body.get("external_userid_list") or []
        if not 1 <= len(ids) <= 100:
            return web.json_response({"errcode": 40058, "errmsg": "external_userid_list size invalid"})
        self.batchget_requests.append(list(ids))
        shape = sample("kf_customer_batchget__response.json")
        shape["customer_list"] = [self.customers[i] for i in ids if i in self.customers]
        shape["invalid_external_userid"] = [i for i in ids if i not in self.customers and not i.startswith("wm")]
        return web.json_response(shape)

    async def _kf_add_contact_way(self, request: web.Request) -> web.Response:
        body, refused = await self.check(request)
        if refused is not None:
            return refused
        assert body is not None
        self.contact_ways.append(body)
        answer = sample("kf_add_contact_way__response.json")
        answer["url"] = f"https://work.weixin.qq.com/kf/kfcbf8f8d07ac7215f?enc_scene=ENC{body.get('scene', '')}"
        return web.json_response(answer)

    async def _kf_account_list(self, request: web.Request) -> web.Response:
        _, refused = await self.check(request)
        return refused or web.json_response(sample("kf_account_list__response.json"))

    async def _kf_servicer_list(self, request: web.Request) -> web.Response:
        _, refused = await self.check(request)
        return refused or web.json_response(sample("kf_servicer_list__response.json"))

    # -- media ----------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        if request.query.get("access_token") not in self.valid_tokens:
            return error(40014)
        form = await request.post()
        media = form.get("media")
        if not isinstance(media, web.FileField):
            return web.json_response({"errcode": 41005, "errmsg": "media data missing"})
        media_id = f"MEDIA_{next(self._ids)}"
        self.uploads[media_id] = (request.query.get("type", ""), media.file.read())
        return web.json_response({"errcode": 0, "errmsg": "ok", "type": request.query.get("type"),
                                  "media_id": media_id, "created_at": "1380000000"})

    async def _media_get(self, request: web.Request) -> web.Response:
        if request.query.get("access_token") not in self.valid_tokens:
            return error(40014)
        media_id = request.query.get("media_id", "")
        if media_id not in self.media:
            return web.Response(text=json.dumps(sample(ERROR_SAMPLES[40007])), content_type="application/json")
        data, mime = self.media[media_id]
        disposition = {"Content-disposition": f'attachment; filename="{media_id}.jpg"'}
        wanted = request.headers.get("Range")
        self.media_ranges.append(wanted or "")
        if wanted:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last), len(data) - 1)
            if end - start + 1 > self.media_limit:
                return web.json_response({"errcode": 830002, "errmsg": "media size exceed limit"})
            return web.Response(status=206, body=data[start:end + 1], content_type=mime,
                                headers=disposition | {"Content-Range": f"bytes {start}-{end}/{len(data)}"})
        if len(data) > self.media_limit:
            return web.json_response({"errcode": 830002, "errmsg": "media size exceed limit"})  # message ours
        return web.Response(body=data, content_type=mime, headers=disposition)


@contextlib.asynccontextmanager
async def serving(fake: FakeWeCom | None = None) -> AsyncIterator[FakeWeCom]:
    """Serve a fake WeCom API on a free local port; `fake.base_url` says where."""
    fake = fake or FakeWeCom()
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        await runner.cleanup()
