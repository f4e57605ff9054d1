"""WeCom models: the kf sync cursor and pull lease, UnionID links, contact ways, corp tags, 群发 tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db.models import Base, BigId, utcnow


class WeComKfCursor(Base):
    """Per kf account: where kf/sync_msg stopped, whether a pull is owed, and who is pulling.

    `requested_seq` grows with every callback (recorded before it is answered); a pull that ends
    sets `pulled_seq` to the request it served, so requested > pulled means a pull is owed (after a
    kill -9 between answer and pull, the periodic catch-up does it). The lease columns make one
    process pull an account at a time, in the database, so losing Redis loses no exclusivity.
    """

    __tablename__ = "wecom_kf_cursors"
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True)
    open_kfid: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(128))
    requested_seq: Mapped[int] = mapped_column(Integer, default=0)
    pulled_seq: Mapped[int] = mapped_column(Integer, default=0)
    pending_token: Mapped[str | None] = mapped_column(Text)  # the newest callback's token (valid 10 min)
    pending_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(160))
    lease_until: Mapped[datetime | None]
    last_pull_at: Mapped[datetime | None]
    last_catchup_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    pulled_total: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WeChatUnionId(Base):
    """An identity's WeChat UnionID: OA followers, kf customers and external contacts with the same one
    are one person (contacts are merged automatically, audited)."""

    __tablename__ = "wechat_unionids"
    identity_id: Mapped[int] = mapped_column(ForeignKey("contact_identities.id", ondelete="CASCADE"),
                                             primary_key=True)
    unionid: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WeComContactWay(Base):
    """An acquisition link: a kf link (scene) or a 渠道活码 (state), with its QR code."""

    __tablename__ = "wecom_contact_ways"
    __table_args__ = (UniqueConstraint("inbox_id", "scene"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # kf | contact
    name: Mapped[str] = mapped_column(String(120))
    scene: Mapped[str] = mapped_column(String(64))  # kf scene or contact_way state
    url: Mapped[str | None] = mapped_column(Text)  # kf link
    qr_code: Mapped[str | None] = mapped_column(Text)  # contact_way QR image URL
    config_id: Mapped[str | None] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # welcome text, staff
    created_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WeComCorpTag(Base):
    """A corp tag (企业标签) mirrored from WeCom; `ours` marks tags this app created (only those it may edit)."""

    __tablename__ = "wecom_corp_tags"
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    group_id: Mapped[str | None] = mapped_column(String(64))
    group_name: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64), index=True)
    ours: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WeComMassTask(Base):
    """One add_msg_template task: a broadcast's recipients followed by one staff member, who confirms it."""

    __tablename__ = "wecom_mass_tasks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"), index=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    sender_userid: Mapped[str] = mapped_column(String(64))
    control_delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    msgid: Mapped[str | None] = mapped_column(String(128))  # WeCom's id of the 群发
    # queued (delivery pending) | waiting (staff has not sent it) | sent | failed | done
    status: Mapped[str] = mapped_column(String(16), default="queued")
    delivery_ids: Mapped[list[Any]] = mapped_column(default=list)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    polled_at: Mapped[datetime | None]
