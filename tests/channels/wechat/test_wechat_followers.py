"""The OA marketing calls (channels/wechat/followers.py) against the fake API: real request shapes, paging,
batch limits and WeChat's error codes surfacing as WeChatAPIError."""

from __future__ import annotations

import pytest

from channels.wechat import WeChatAdapter
from channels.wechat import followers as api
from channels.wechat.transport import WeChatAPIError
from tests.channels.wechat.fake_wechat_api import FakeWeChat


async def test_follower_pages_and_profiles_with_unionid(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    fake.followers.page_size = 2
    vip = fake.followers.add_tag("VIP")
    for i in range(5):
        fake.followers.follow(f"o{i}", unionid=f"U{i}" if i % 2 == 0 else None, tags=(vip,) if i == 1 else ())
    seen: list[str] = []
    next_openid = ""
    while True:
        page, next_openid, total = await api.follower_page(adapter.client, next_openid)
        assert total == 5
        seen += page
        if not page:
            break
    assert seen == ["o0", "o1", "o2", "o3", "o4"]
    profiles = await api.profiles(adapter.client, seen)
    assert [p.get("unionid") for p in profiles] == ["U0", None, "U2", None, "U4"]
    assert profiles[1]["tagid_list"] == [vip] and profiles[0]["subscribe"] == 1
    with pytest.raises(ValueError, match="at most 100"):
        await api.profiles(adapter.client, [f"o{i}" for i in range(101)])
    with pytest.raises(WeChatAPIError) as exc:
        await api.follower_page(adapter.client, "not-a-follower")
    assert exc.value.errcode == 40003


async def test_tags_both_ways_in_batches_of_50(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    for i in range(120):
        fake.followers.follow(f"o{i}")
    assert await api.tags(adapter.client) == {2: "星标组"}
    tag = await api.create_tag(adapter.client, "双十一")
    with pytest.raises(WeChatAPIError) as exc:
        await api.create_tag(adapter.client, "双十一")
    assert exc.value.errcode == 45157  # the name exists
    await api.tag_members(adapter.client, tag, [f"o{i}" for i in range(120)])
    calls = [c for c in fake.followers.calls if c[0] == "batchtagging"]
    assert [len(openids) for _, (_, openids) in calls] == [50, 50, 20]
    assert all(tag in fake.followers.followers[f"o{i}"].tags for i in range(120))
    await api.tag_members(adapter.client, tag, ["o1", "o2"], untag=True)
    assert tag not in fake.followers.followers["o1"].tags and tag in fake.followers.followers["o3"].tags
    with pytest.raises(WeChatAPIError) as exc:
        await api.tag_members(adapter.client, 999, ["o1"])
    assert exc.value.errcode == 45159  # no such tag


async def test_parametric_qr_codes(adapter: WeChatAdapter, fake: FakeWeChat) -> None:
    temp = await api.create_qrcode(adapter.client, "spring", permanent=False, expire_seconds=3600)
    assert temp["expire_seconds"] == 3600 and temp["url"].startswith("http://weixin.qq.com/q/") and temp["ticket"]
    perm = await api.create_qrcode(adapter.client, "poster", permanent=True, expire_seconds=0)
    assert "expire_seconds" not in perm
    sent = [q["request"] for q in fake.followers.qrcodes]
    assert sent == [{"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "spring"}}, "expire_seconds": 3600},
                    {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "poster"}}}]
    with pytest.raises(WeChatAPIError) as exc:
        await api.create_qrcode(adapter.client, "x" * 65, permanent=True, expire_seconds=0)
    assert exc.value.errcode == 40097
    # An expired token is refreshed once and the call retried, like every WeChatClient call.
    fake.invalidate_tokens()
    assert (await api.create_qrcode(adapter.client, "again", permanent=True, expire_seconds=0))["ticket"]
