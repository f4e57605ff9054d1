"""Official Account marketing APIs: parametric QR codes, the follower list and profiles, user tags.

Thin calls over WeChatClient (token refresh and errcode checks are its job); no storage here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from channels.wechat.api import WeChatClient
from channels.wechat.transport import request_json

BATCHGET_MAX = 100  # user/info/batchget: at most 100 OpenIDs per call
TAGGING_MAX = 50  # tags/members/batchtagging and batchuntagging: at most 50 OpenIDs per call


async def _get(client: WeChatClient, path: str, params: Mapping[str, str]) -> dict[str, Any]:
    """GET with the access token (refreshed once on a token error, like every WeChatClient call)."""

    async def call(token: str) -> dict[str, Any]:
        return await request_json(client._http(), "GET", client._base + path,  # noqa: SLF001
                                  params={"access_token": token, **params})

    return await client._with_token(call)  # noqa: SLF001


async def create_qrcode(client: WeChatClient, scene: str, *, permanent: bool, expire_seconds: int) -> dict[str, Any]:
    """qrcode/create with scene_str: {"ticket", "expire_seconds", "url"}."""
    payload: dict[str, Any] = {"action_name": "QR_LIMIT_STR_SCENE" if permanent else "QR_STR_SCENE",
                               "action_info": {"scene": {"scene_str": scene}}}
    if not permanent:
        payload["expire_seconds"] = expire_seconds
    return await client.post_json("/cgi-bin/qrcode/create", payload)


async def follower_page(client: WeChatClient, next_openid: str = "") -> tuple[list[str], str, int]:
    """user/get: (up to 10,000 OpenIDs, the next_openid to continue from, total followers)."""
    data = await _get(client, "/cgi-bin/user/get", {"next_openid": next_openid} if next_openid else {})
    openids = list(((data.get("data") or {}).get("openid")) or [])
    return [str(o) for o in openids], str(data.get("next_openid") or ""), int(data.get("total") or 0)


async def profiles(client: WeChatClient, openids: Sequence[str]) -> list[dict[str, Any]]:
    """user/info/batchget for at most 100 OpenIDs: profiles with unionid and tagid_list."""
    if len(openids) > BATCHGET_MAX:
        raise ValueError(f"user/info/batchget takes at most {BATCHGET_MAX} OpenIDs")
    data = await client.post_json("/cgi-bin/user/info/batchget",
                                  {"user_list": [{"openid": o, "lang": "zh_CN"} for o in openids]})
    return list(data.get("user_info_list") or [])


async def tags(client: WeChatClient) -> dict[int, str]:
    """tags/get: the account's tags, id -> name."""
    data = await _get(client, "/cgi-bin/tags/get", {})
    return {int(t["id"]): str(t["name"]) for t in data.get("tags") or []}


async def create_tag(client: WeChatClient, name: str) -> int:
    data = await client.post_json("/cgi-bin/tags/create", {"tag": {"name": name}})
    return int(data["tag"]["id"])


async def tag_members(client: WeChatClient, tag_id: int, openids: Sequence[str], *, untag: bool = False) -> None:
    """tags/members/batchtagging (or batchuntagging), 50 OpenIDs per call."""
    path = "/cgi-bin/tags/members/batchuntagging" if untag else "/cgi-bin/tags/members/batchtagging"
    for i in range(0, len(openids), TAGGING_MAX):
        await client.post_json(path, {"openid_list": list(openids[i:i + TAGGING_MAX]), "tagid": tag_id})
