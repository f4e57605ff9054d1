"""WeChat Official Account marketing models: 群发 batches and subscription-message consents."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scrm.db.models import Base, BigId, utcnow


class WeChatMassBatch(Base):
    """One 群发 API call of a broadcast: by tag / to all (message/mass/sendall) or up to 10,000 OpenIDs
    (message/mass/send).

    Written, with its `clientmsgid`, in the transaction that starts the broadcast, before anything is
    sent: a worker killed mid-call resends the same clientmsgid and WeChat answers 45065 with the
    msg_id of the 群发 it already accepted, so no follower gets it twice.
    """

    __tablename__ = "wechat_mass_batches"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcasts.id", ondelete="CASCADE"), index=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    clientmsgid: Mapped[str] = mapped_column(String(64), unique=True)
    target: Mapped[str] = mapped_column(String(8))  # list | tag | all
    tag_id: Mapped[int | None] = mapped_column(Integer)
    recipients: Mapped[int] = mapped_column(Integer, default=0)  # OpenIDs in a list batch
    # A list batch's recipients: the broadcast's "waiting" deliveries of this inbox with ids in this range.
    first_delivery_id: Mapped[int | None] = mapped_column(BigId)
    last_delivery_id: Mapped[int | None] = mapped_column(BigId)
    control_delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"))
    # queued (not accepted yet) | submitted (WeChat accepted the job) | finished (MASSSENDJOBFINISH) | failed
    status: Mapped[str] = mapped_column(String(16), default="queued")
    msg_id: Mapped[str | None] = mapped_column(String(32), index=True)
    msg_status: Mapped[str | None] = mapped_column(String(32))  # message/mass/get: SEND_SUCCESS, SENDING, ...
    job_status: Mapped[str | None] = mapped_column(String(64))  # MASSSENDJOBFINISH Status: "send success", "err(…)"
    total_count: Mapped[int | None] = mapped_column(Integer)
    filter_count: Mapped[int | None] = mapped_column(Integer)
    sent_count: Mapped[int | None] = mapped_column(Integer)
    error_count: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class WeChatSubscribeConsent(Base):
    """A follower's consent to one subscription-message template (订阅通知).

    `remaining` counts one-time consents (each "accept" in the popup grants one send; a send uses it
    up); a long-term template needs none. "reject" (popup or settings) stops all sends.
    """

    __tablename__ = "wechat_subscribe_consents"
    identity_id: Mapped[int] = mapped_column(ForeignKey("contact_identities.id", ondelete="CASCADE"),
                                             primary_key=True)
    template_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # accept | reject
    remaining: Mapped[int] = mapped_column(Integer, default=0)
    long_term: Mapped[bool] = mapped_column(Boolean, default=False)
    popup_scene: Mapped[str | None] = mapped_column(String(16))
    last_event: Mapped[str | None] = mapped_column(String(160))  # a retried callback is counted once
    last_result: Mapped[str | None] = mapped_column(String(120))  # subscribe_msg_sent_event ErrorStatus
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
