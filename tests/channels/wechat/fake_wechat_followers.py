"""The follower, tag and parametric-QR-code endpoints of the fake WeChat API (real JSON and error codes).

Kept apart from fake_wechat_api.py so other endpoint groups can grow there without touching these.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.channels.wechat.fake_wechat_api import FakeWeChat

SYSTEM_TAGS = {2: "星标组"}  # WeChat's own tag, present on every account


@dataclass
class FakeFollower:
    openid: str
    unionid: str | None = None
    tags: set[int] = field(default_factory=set)
    subscribed: bool = True
    language: str = "zh_CN"
    qr_scene_str: str = ""


@dataclass
class FakeFollowers:
    """What the account has: followers (in follow order), tags, QR codes made; calls recorded."""

    followers: dict[str, FakeFollower] = field(default_factory=dict)
    tags: dict[int, str] = field(default_factory=lambda: dict(SYSTEM_TAGS))
    qrcodes: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 10000  # user/get answers at most 10,000 OpenIDs per call
    calls: list[tuple[str, Any]] = field(default_factory=list)
    next_tag_id: int = 100

    def follow(self, openid: str, unionid: str | None = None, tags: tuple[int, ...] = ()) -> FakeFollower:
        self.followers[openid] = FakeFollower(openid, unionid, set(tags))
        return self.followers[openid]

    def add_tag(self, name: str) -> int:
        self.next_tag_id += 1
        self.tags[self.next_tag_id] = name
        return self.next_tag_id


def _error(code: int, msg: str) -> web.Response:
    return web.json_response({"errcode": code, "errmsg": msg})


def add_routes(fake: FakeWeChat, app: web.Application) -> None:
    """user/get, user/info/batchget, tags/get|create, tags/members/batch(un)tagging, qrcode/create."""
    oa = fake.followers

    async def body(request: web.Request) -> dict[str, Any]:
        return json.loads(await request.read() or b"{}")  # type: ignore[no-any-return]

    async def user_get(request: web.Request) -> web.Response:
        if (refused := fake._check(request)) is not None:
            return refused
        following = [f.openid for f in oa.followers.values() if f.subscribed]
        start = request.query.get("next_openid", "")
        if start and start not in following:
            return _error(40003, "invalid openid")
        begin = following.index(start) + 1 if start else 0
        page = following[begin:begin + oa.page_size]
        oa.calls.append(("user/get", start))
        answer: dict[str, Any] = {"total": len(following), "count": len(page),
                                  "next_openid": page[-1] if page else ""}
        if page:
            answer["data"] = {"openid": page}
        return web.json_response(answer)

    async def batchget(request: web.Request) -> web.Response:
        if (refused := fake._check(request)) is not None:
            return refused
        users = (await body(request)).get("user_list") or []
        if not users or len(users) > 100:
            return _error(40032, "invalid openid list size, at most 100")
        oa.calls.append(("user/info/batchget", len(users)))
        out = []
        for u in users:
            f = oa.followers.get(u.get("openid", ""))
            if f is None:
                return _error(40003, "invalid openid")
            if not f.subscribed:
                out.append({"subscribe": 0, "openid": f.openid})
                continue
            info: dict[str, Any] = {"subscribe": 1, "openid": f.openid, "language": f.language,
                                    "subscribe_time": 1700000000, "remark": "", "groupid": 0,
                                    "tagid_list": sorted(f.tags), "subscribe_scene": "ADD_SCENE_QR_CODE",
                                    "qr_scene": 0, "qr_scene_str": f.qr_scene_str}
            if f.unionid:
                info["unionid"] = f.unionid
            out.append(info)
        return web.json_response({"user_info_list": out})

    async def tags_get(request: web.Request) -> web.Response:
        if (refused := fake._check(request)) is not None:
            return refused
        counts = {tid: sum(tid in f.tags for f in oa.followers.values()) for tid in oa.tags}
        return web.json_response({"tags": [{"id": tid, "name": name, "count": counts[tid]}
                                           for tid, name in oa.tags.items()]})

    async def tags_create(request: web.Request) -> web.Response:
        if (refused := fake._check(request)) is not None:
            return refused
        name = str(((await body(request)).get("tag") or {}).get("name") or "")
        if not name or len(name) > 30:
            return _error(45158, "tag name too long")
        if name in oa.tags.values():
            return _error(45157, "tag name already exists")
        return web.json_response({"tag": {"id": oa.add_tag(name), "name": name}})

    def tagging(untag: bool) -> Any:
        async def handler(request: web.Request) -> web.Response:
            if (refused := fake._check(request)) is not None:
                return refused
            data = await body(request)
            openids, tag_id = data.get("openid_list") or [], data.get("tagid")
            if not openids or len(openids) > 50:
                return _error(40032, "invalid openid list size, at most 50")
            if tag_id not in oa.tags:
                return _error(45159, "invalid tag id")
            if any(o not in oa.followers for o in openids):
                return _error(49003, "not match openid with appid")
            for o in openids:
                (oa.followers[o].tags.discard if untag else oa.followers[o].tags.add)(tag_id)
            oa.calls.append(("batchuntagging" if untag else "batchtagging", (tag_id, list(openids))))
            return _error(0, "ok")
        return handler

    async def qrcode_create(request: web.Request) -> web.Response:
        if (refused := fake._check(request)) is not None:
            return refused
        data = await body(request)
        action = data.get("action_name")
        scene = ((data.get("action_info") or {}).get("scene") or {}).get("scene_str")
        if action not in ("QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE"):
            return _error(40054, "invalid action name")
        if not isinstance(scene, str) or not 1 <= len(scene) <= 64:
            return _error(40097, "invalid args: scene_str must be 1-64 characters")
        temporary = action in ("QR_SCENE", "QR_STR_SCENE")
        expire = int(data.get("expire_seconds") or 60)
        if temporary and expire > 2592000:
            return _error(40097, "invalid args: expire_seconds")
        n = len(oa.qrcodes) + 1
        ticket = base64.b64encode(f"http://weixin.qq.com/q/fake{n}".encode()).decode()
        answer: dict[str, Any] = {"ticket": ticket, "url": f"http://weixin.qq.com/q/fake{n}"}
        if temporary:
            answer["expire_seconds"] = expire
        oa.qrcodes.append({"request": data, "answer": answer})
        return web.json_response(answer)

    app.router.add_get("/cgi-bin/user/get", user_get)
    app.router.add_post("/cgi-bin/user/info/batchget", batchget)
    app.router.add_get("/cgi-bin/tags/get", tags_get)
    app.router.add_post("/cgi-bin/tags/create", tags_create)
    app.router.add_post("/cgi-bin/tags/members/batchtagging", tagging(False))
    app.router.add_post("/cgi-bin/tags/members/batchuntagging", tagging(True))
    app.router.add_post("/cgi-bin/qrcode/create", qrcode_create)
