"""A local fake of api.weixin.qq.com speaking the real JSON and error codes (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.channels.wechat.fake_wechat_followers import FakeFollowers
from tests.channels.wechat.fake_wechat_followers import add_routes as add_follower_routes

APP_ID = "wx1234567890abcdef"
APP_SECRET = "s3cr3t-app-secret-value"

INVALID_TOKEN = {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
ERRMSG = {
    -1: "system error",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    48002: "api blocked",
    45009: "reach max api daily quota limit",
    40003: "invalid openid",
    43004: "require subscribe",
    40007: "invalid media_id",
    40037: "invalid template_id",
    45028: "has no masssend quota",
    45065: "clientmsgid exist",
    43101: "user refuse to accept the msg",
}


@dataclass
class FakeWeChat:
    app_id: str = APP_ID
    app_secret: str = APP_SECRET
    stable_token_available: bool = True
    expires_in: int = 7200
    fetches: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stable_requests: list[dict[str, Any]] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    custom_sends: list[dict[str, Any]] = field(default_factory=list)
    template_sends: list[dict[str, Any]] = field(default_factory=list)
    uploads: dict[str, tuple[str, bytes, str | None]] = field(default_factory=dict)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    errors: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    http_errors: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    unionids: dict[str, str] = field(default_factory=dict)  # openid -> unionid (account bound to an open platform)
    followers: FakeFollowers = field(default_factory=FakeFollowers)  # user/get, tags, qrcode/create (i25b)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    # -- 群发 and subscription messages (issue 25 a) --
    mass_sends: list[dict[str, Any]] = field(default_factory=list)  # accepted sendall / send bodies
    mass_calls: int = 0  # every call, refused ones and retries included
    mass_received: Counter[str] = field(default_factory=Counter)  # OpenID -> 群发 received (by list)
    clientmsgids: dict[str, int] = field(default_factory=dict)  # clientmsgid -> msg_id (WeChat keeps 24 h)
    mass_quota: int | None = None  # 群发 the account may still send (None: plenty); 0 -> 45028
    mass_delay: float = 0.0  # seconds between accepting a 群发 and answering (a worker can die meanwhile)
    mass_previews: list[dict[str, Any]] = field(default_factory=list)
    mass_status: dict[int, str] = field(default_factory=dict)  # msg_id -> msg_status for mass/get
    subscribe_sends: list[dict[str, Any]] = field(default_factory=list)
    subscribe_refused: set[tuple[str, str]] = field(default_factory=set)  # (openid, template_id) -> 43101

    @property
    def token_fetches(self) -> int:
        return sum(self.fetches.values())

    def fail_next(self, path: str, *errcodes: int) -> None:
        """The next calls to `path` answer these WeChat errcodes, in order."""
        self.errors[path].extend(errcodes)

    def invalidate_tokens(self) -> None:
        """Someone fetched a token elsewhere: every token we handed out is now rejected (40001)."""
        self.valid_tokens.clear()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        app.router.add_post("/cgi-bin/message/custom/send", self._custom_send)
        app.router.add_post("/cgi-bin/message/template/send", self._template_send)
        app.router.add_post("/cgi-bin/media/upload", self._upload)
        app.router.add_get("/cgi-bin/media/get", self._media_get)
        app.router.add_get("/video/{media_id}", self._video)
        app.router.add_get("/cgi-bin/user/info", self._user_info)
        self._add_mass_routes(app)
        add_follower_routes(self, app)
        return app

    # -- token ------------------------------------------------------------------------------

    def _issue(self, appid: str | None, secret: str | None) -> web.Response:
        if appid != self.app_id:
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        if secret != self.app_secret:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        token = f"ACCESS_TOKEN_{next(self._ids)}"
        self.valid_tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": self.expires_in})

    async def _token(self, request: web.Request) -> web.Response:
        self.fetches["token"] += 1
        if request.query.get("grant_type") != "client_credential":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        return self._issue(request.query.get("appid"), request.query.get("secret"))

    async def _stable_token(self, request: web.Request) -> web.Response:
        if not self.stable_token_available:
            return web.Response(status=404, text="not found")
        self.fetches["stable_token"] += 1
        body = json.loads(await request.read())
        self.stable_requests.append(body)
        return self._issue(body.get("appid"), body.get("secret"))

    # -- token-protected APIs ---------------------------------------------------------------

    def _check(self, request: web.Request) -> web.Response | None:
        path = request.path
        if self.http_errors[path]:
            return web.Response(status=self.http_errors[path].pop(0), text="upstream trouble")
        if request.query.get("access_token") not in self.valid_tokens:
            return web.json_response(INVALID_TOKEN)
        if self.errors[path]:
            code = self.errors[path].pop(0)
            return web.json_response({"errcode": code, "errmsg": ERRMSG.get(code, "error")})
        return None

    async def _custom_send(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        raw = await request.read()
        self.custom_sends.append(json.loads(raw.decode("utf-8")))
        self.custom_raw = raw
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _template_send(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        self.template_sends.append(json.loads(await request.read()))
        return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": 200228332 + len(self.template_sends)})

    async def _upload(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        kind = request.query.get("type", "")
        if kind not in ("image", "voice", "video", "thumb"):
            return web.json_response({"errcode": 40004, "errmsg": "invalid media type"})
        form = await request.post()
        media = form.get("media")
        if not isinstance(media, web.FileField):
            return web.json_response({"errcode": 41005, "errmsg": "media data missing"})
        media_id = f"MEDIA_{next(self._ids)}"
        self.uploads[media_id] = (kind, media.file.read(), media.content_type)
        return web.json_response({"type": kind, "media_id": media_id, "created_at": 1700000000})

    async def _media_get(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        media_id = request.query.get("media_id", "")
        if media_id.startswith("VIDEO"):
            url = str(request.url.with_path(f"/video/{media_id}").with_query(None))
            return web.json_response({"video_url": url})
        if media_id not in self.media:
            # WeChat answers errors of this binary endpoint as JSON with a text/plain type.
            body = json.dumps({"errcode": 40007, "errmsg": "invalid media_id"})
            return web.Response(text=body, content_type="text/plain")
        data, mime = self.media[media_id]
        return web.Response(
            body=data,
            content_type=mime,
            headers={"Content-disposition": f'attachment; filename="{media_id}.jpg"'},
        )

    async def _user_info(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        openid = request.query.get("openid", "")
        info: dict[str, Any] = {"subscribe": 1, "openid": openid, "language": "zh_CN", "subscribe_time": 1700000000}
        if openid in self.unionids:
            info["unionid"] = self.unionids[openid]
        return web.json_response(info)

    async def _video(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x00\x00\x18ftypmp42", content_type="video/mp4")

    # -- 群发 (mass send) and subscription messages: issue 25 a ------------------------------------

    def _add_mass_routes(self, app: web.Application) -> None:
        app.router.add_post("/cgi-bin/message/mass/sendall", self._mass)
        app.router.add_post("/cgi-bin/message/mass/send", self._mass)
        app.router.add_post("/cgi-bin/message/mass/preview", self._mass_preview)
        app.router.add_post("/cgi-bin/message/mass/get", self._mass_get)
        app.router.add_post("/cgi-bin/message/subscribe/bizsend", self._subscribe_send)

    async def _mass(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        self.mass_calls += 1
        body = json.loads(await request.read())
        if body.get("msgtype") not in ("text", "mpnews", "image", "voice", "mpvideo", "wxcard"):
            return web.json_response({"errcode": 40008, "errmsg": "invalid message type"})
        clientmsgid = body.get("clientmsgid")
        if clientmsgid and clientmsgid in self.clientmsgids:
            return web.json_response({"errcode": 45065, "errmsg": ERRMSG[45065],
                                      "msg_id": self.clientmsgids[clientmsgid]})
        if request.path.endswith("/send"):
            touser = body.get("touser")
            if not isinstance(touser, list) or not 2 <= len(touser) <= 10_000:
                return web.json_response({"errcode": 40130,
                                          "errmsg": "invalid openid list size, at least two openid"})
        elif not isinstance(body.get("filter"), dict):
            return web.json_response({"errcode": 40003, "errmsg": "invalid filter"})
        if self.mass_quota is not None:
            if self.mass_quota <= 0:
                return web.json_response({"errcode": 45028, "errmsg": ERRMSG[45028]})
            self.mass_quota -= 1
        msg_id = 1000000000 + len(self.mass_sends) + 1
        self.mass_sends.append(body)
        self.mass_status[msg_id] = "SENDING"
        if clientmsgid:
            self.clientmsgids[clientmsgid] = msg_id
        for openid in body.get("touser") or []:
            self.mass_received[openid] += 1
        if self.mass_delay:  # accepted already: a caller that dies now must not send it again
            await asyncio.sleep(self.mass_delay)
        return web.json_response({"errcode": 0, "errmsg": "send job submission success", "msg_id": msg_id,
                                  "msg_data_id": 2247483000 + msg_id % 1000})

    async def _mass_preview(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        body = json.loads(await request.read())
        if not body.get("touser") and not body.get("towxname"):
            return web.json_response({"errcode": 40003, "errmsg": ERRMSG[40003]})
        self.mass_previews.append(body)
        return web.json_response({"errcode": 0, "errmsg": "preview success", "msg_id": 34182})

    async def _mass_get(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        body = json.loads(await request.read())
        msg_id = int(body.get("msg_id") or 0)
        if msg_id not in self.mass_status:
            return web.json_response({"errcode": 40059, "errmsg": "invalid msg id"})
        return web.json_response({"msg_id": msg_id, "msg_status": self.mass_status[msg_id]})

    async def _subscribe_send(self, request: web.Request) -> web.Response:
        refused = self._check(request)
        if refused is not None:
            return refused
        body = json.loads(await request.read())
        if not body.get("touser"):
            return web.json_response({"errcode": 40003, "errmsg": ERRMSG[40003]})
        if not body.get("template_id"):
            return web.json_response({"errcode": 40037, "errmsg": ERRMSG[40037]})
        if (body["touser"], body["template_id"]) in self.subscribe_refused:
            return web.json_response({"errcode": 43101, "errmsg": ERRMSG[43101]})
        self.subscribe_sends.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})


@contextlib.asynccontextmanager
async def serving(fake: FakeWeChat | None = None) -> AsyncIterator[FakeWeChat]:
    """Serve a fake WeChat API on a free local port; `fake.base_url` says where."""
    fake = fake or FakeWeChat()
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        await runner.cleanup()
