"""The 客户联系 (external contact) part of the fake WeCom API: contacts, corp tags, welcome, 群发."""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.channels.wecom.wecom_samples import sample

if TYPE_CHECKING:
    from tests.channels.wecom.fake_wecom_api import FakeWeCom


@dataclass
class ContactsState:
    # external_userid -> {"external_contact": {...}, "follow_user": [{...}]}
    people: dict[str, dict[str, Any]] = field(default_factory=dict)
    tag_groups: list[dict[str, Any]] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    welcomes: list[dict[str, Any]] = field(default_factory=list)
    welcome_codes: set[str] = field(default_factory=set)
    ways: list[dict[str, Any]] = field(default_factory=list)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # msgid -> task
    by_user_requests: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add_person(self, euid: str, name: str, followers: list[dict[str, Any]], unionid: str | None = None) -> None:
        contact: dict[str, Any] = {"external_userid": euid, "name": name, "type": 1, "gender": 1,
                                   "avatar": f"http://wx.qlogo.cn/{euid}"}
        if unionid:
            contact["unionid"] = unionid
        follow = [{"remark": "", "description": "", "createtime": 1700000000, "tags": [], "add_way": 1,
                   "oper_userid": f["userid"], **f} for f in followers]
        self.people[euid] = {"external_contact": contact, "follow_user": follow}

    def confirm(self, msgid: str, statuses: dict[str, int] | None = None) -> None:
        """The staff member sends the 群发 in the WeCom client: each recipient gets a status (1 sent)."""
        task = self.templates[msgid]
        task["task_status"] = 2
        for euid in task["external_userid"]:
            task["results"][euid] = (statuses or {}).get(euid, 1)


def add_contact_routes(app: web.Application, fake: FakeWeCom) -> None:
    """Register the externalcontact endpoints on the fake's app."""
    state = fake.contacts

    async def body_of(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
        return await fake.check(request)

    def ok(extra: dict[str, Any]) -> web.Response:
        return web.json_response({"errcode": 0, "errmsg": "ok", **extra})

    async def follow_user_list(request: web.Request) -> web.Response:
        _, refused = await body_of(request)
        users = sorted({f["userid"] for p in state.people.values() for f in p["follow_user"]})
        return refused or ok({"follow_user": users})

    async def batch_get_by_user(request: web.Request) -> web.Response:
        body, refused = await body_of(request)
        if refused is not None:
            return refused
        assert body is not None
        state.by_user_requests.append(body)
        users = set(body.get("userid_list") or [])
        rows = []
        for person in state.people.values():
            for follow in person["follow_user"]:
                if follow["userid"] in users:
                    info = {k: v for k, v in follow.items() if k != "tags"}
                    info["tag_id"] = [t["tag_id"] for t in follow.get("tags") or [] if t.get("tag_id")]
                    rows.append({"external_contact": person["external_contact"], "follow_info": info})
        start = int(body.get("cursor") or 0)
        limit = int(body.get("limit") or 50)
        page = rows[start:start + limit]
        nxt = str(start + limit) if start + limit < len(rows) else ""
        return ok({"external_contact_list": page, "next_cursor": nxt})

    async def get(request: web.Request) -> web.Response:
        _, refused = await body_of(request)
        if refused is not None:
            return refused
        person = state.people.get(request.query.get("external_userid", ""))
        if person is None:
            return web.json_response({"errcode": 84061, "errmsg": "not external contact"})
        return ok(copy.deepcopy(person))

    async def corp_tags(request: web.Request) -> web.Response:
        _, refused = await body_of(request)
        return refused or ok({"tag_group": state.tag_groups})

    async def add_corp_tag(request: web.Request) -> web.Response:
        body, refused = await body_of(request)
        if refused is not None:
            return refused
        assert body is not None
        group = next((g for g in state.tag_groups if g["group_name"] == body.get("group_name")), None)
        if group is None:
            group = {"group_id": f"GRP{next(state._ids)}", "group_name": body.get("group_name"),
                     "create_time": 1700000000, "order": 0, "deleted": False, "tag": [], "_ours": True}
            state.tag_groups.append(group)
        for tag in body.get("tag") or []:
            group["tag"].append({"id": f"et{next(state._ids):06d}", "name": tag["name"], "create_time": 1700000000,
                                 "order": 0, "deleted": False})
        return ok({"tag_group": group})

    async def mark_tag(request: web.Request) -> web.Response:
        body, refused = await body_of(request)
        if refused is not None:
            return refused
        assert body is not None
        person = state.people.get(body.get("external_userid", ""))
        follow = next((f for f in (person or {}).get("follow_user", []) if f["userid"] == body.get("userid")), None)
        if follow is None:
            return web.json_response({"errcode": 84061, "errmsg": "not external contact"})
        names = {t["id"]: (g["group_name"], t["name"]) for g in state.tag_groups for t in g["tag"]}
        tags = [t for t in follow.get("tags") or [] if t.get("tag_id") not in set(body.get("remove_tag") or [])]
        have = {t.get("tag_id") for t in tags}
        for tag_id in body.get("add_tag") or []:
            if tag_id not in names:
                return web.json_response({"errcode": 40068, "errmsg": "invalid tagid"})
            if tag_id not in have:
                tags.append({"group_name": names[tag_id][0], "tag_name": names[tag_id][1], "tag_id": tag_id,
                             "type": 1})
        follow["tags"] = tags
        state.marks.append(body)
        return ok({})

    async def send_welcome(request: web.Request) -> web.Response:
        body, refused = await body_of(request)
        if refused is not None:
            return refused
        assert body is not None
        code = body.get("welcome_code")
        if code not in state.welcome_codes:
            return web.json_response({"errcode": 41051, "errmsg": "externaluser has started chatting"})
        state.welcome_codes.discard(code)
        state.welcomes.append(body)
        return ok({})

    async def add_way(request: web.Request) -> web.Response:
        body, refused = await body_of(request)
        if refused is not None:
            return refused
        assert body is not None
        state.ways.append(body)
        return ok(sample("externalcontact_add_contact_way__response.json") | {"config_id": f"cfg{next(state._ids)}"})

    async def add_msg_template(request: web.Request) -> web.Response:
        body, refused = await body_of(request)
        if refused is not None:
            return refused
        assert body is not None
        msgid = f"msg{next(state._ids):06d}"
        known = [e for e in body.get("external_userid") or [] if e in state.people]
        fail = [e for e in body.get("external_userid") or [] if e not in state.people]
        state.templates[msgid] = {"sender": body.get("sender"), "external_userid": known, "text": body.get("text"),
                                  "task_status": 0, "results": {e: 0 for e in known}, "body": body}
        return ok({"fail_list": fail, "msgid": msgid})

    async def groupmsg_task(request: web.Request) -> web.Response:
        body, refused = await body_of(request)
        if refused is not None:
            return refused
        assert body is not None
        task = state.templates.get(body.get("msgid", ""))
        if task is None:
            return web.json_response({"errcode": 41063, "errmsg": "msg is being sent"})
        return ok({"next_cursor": "", "task_list": [{"userid": task["sender"], "status": task["task_status"],
                                                     "send_time": 1700000000}]})

    async def groupmsg_result(request: web.Request) -> web.Response:
        body, refused = await body_of(request)
        if refused is not None:
            return refused
        assert body is not None
        task = state.templates.get(body.get("msgid", ""))
        if task is None:
            return web.json_response({"errcode": 41063, "errmsg": "msg is being sent"})
        rows = [{"external_userid": e, "userid": task["sender"], "status": s, "send_time": 1700000000}
                for e, s in task["results"].items()]
        return ok({"next_cursor": "", "send_list": rows})

    routes = {"externalcontact/get_follow_user_list": ("GET", follow_user_list),
              "externalcontact/batch/get_by_user": ("POST", batch_get_by_user),
              "externalcontact/get": ("GET", get),
              "externalcontact/get_corp_tag_list": ("POST", corp_tags),
              "externalcontact/add_corp_tag": ("POST", add_corp_tag),
              "externalcontact/mark_tag": ("POST", mark_tag),
              "externalcontact/send_welcome_msg": ("POST", send_welcome),
              "externalcontact/add_contact_way": ("POST", add_way),
              "externalcontact/add_msg_template": ("POST", add_msg_template),
              "externalcontact/get_groupmsg_task": ("POST", groupmsg_task),
              "externalcontact/get_groupmsg_send_result": ("POST", groupmsg_result)}
    for path, (method, handler) in routes.items():
        app.router.add_route(method, f"/cgi-bin/{path}", handler)
    _ = json  # the bodies are parsed by fake.check
