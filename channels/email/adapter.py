"""The email channel: IMAP polling and/or an SMTP listener in, SMTP out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from channels.base import Capabilities, ChannelAdapter, FetchedFile, IngestSink
from channels.email.config import EmailSecrets, EmailSettings
from channels.email.imap import ImapPoller
from channels.email.inbound import Translation, external_id, precheck, translate
from channels.email.outbound import build_message, send_mail
from channels.email.parse import MailPart, parse_mail
from channels.email.smtp_server import SmtpReceiver
from channels.registry import register
from scrm.domain import (
    Attachment,
    OutboundMessage,
    PermanentSendError,
    SendResult,
    TransientSendError,
    WebhookError,
    WebhookRequest,
    WebhookResponse,
)

log = logging.getLogger(__name__)


@register
class EmailAdapter(ChannelAdapter):
    """Email inbox: one InboundMessage per mail, bounces as delivery events, replies threaded."""

    channel_type = "email"
    display_name = "Email"
    # threaded: a mail without a known reference or subject token opens a new conversation instead of
    # joining the sender's latest one (two unrelated requests stay two tickets).
    capabilities = Capabilities(buttons=False, attachments=True, polling=True, idempotent_send=False, threaded=True)
    settings_model = EmailSettings
    secrets_model = EmailSecrets
    settings: EmailSettings
    secrets: EmailSecrets

    async def handle_webhook(self, request: WebhookRequest, sink: IngestSink) -> WebhookResponse:
        """Email arrives over IMAP or SMTP, never over a webhook."""
        raise WebhookError(404, "email inboxes receive mail over IMAP or SMTP, not webhooks", code="not_found")

    async def ingest_raw(self, raw: bytes, sink: IngestSink) -> Translation:
        """Parse one raw mail, store its files, hand the items to the sink (raises if it fails)."""
        mail = parse_mail(raw)
        early = precheck(mail, self.settings.address)
        if early is not None and not early.items and early.ignored:
            log.info("email %s ignored: %s", mail.message_id or "(no Message-ID)", early.ignored)
            return early
        stored: list[tuple[MailPart, str]] = []
        raw_key: str | None = None
        if early is not None and early.unroutable:
            # Nobody to answer: kept whole for an admin instead of being refused (and lost).
            raw_key = await self.runtime.storage.save(
                raw, filename=f"{external_id(mail)[:60]}.eml", mime_type="message/rfc822")
            log.warning("email %s has no usable sender; kept as unroutable mail (%s)",
                        mail.message_id or "(no Message-ID)", early.unroutable)
            early = None
        elif early is None:
            if len(raw) > self.settings.max_message_bytes:
                mail.warn(f"mail of {len(raw)} bytes is over the size limit; its files were not stored")
            else:
                for part in mail.parts:
                    key = await self.runtime.storage.save(part.data, filename=part.filename, mime_type=part.mime_type)
                    stored.append((part, key))
                if mail.warnings or self.settings.keep_raw:
                    raw_key = await self.runtime.storage.save(
                        raw, filename=f"{external_id(mail)[:60]}.eml", mime_type="message/rfc822"
                    )
        result = early or translate(mail, own_address=self.settings.address, stored=stored, raw_storage_key=raw_key)
        if result.ignored:
            log.info("email %s ignored: %s", mail.message_id or "(no Message-ID)", result.ignored)
        if result.items:
            await sink(result.items)
        return result

    async def send(self, message: OutboundMessage) -> SendResult:
        """Send one mail over SMTP; the Message-ID (no brackets) is the delivery's external id."""
        files: list[FetchedFile] = []
        for att in message.attachments:
            if att.storage_key:
                try:
                    data = await self.runtime.storage.load(att.storage_key)
                except KeyError as exc:
                    raise PermanentSendError(f"attachment {att.filename or att.storage_key} is missing") from exc
                files.append(FetchedFile(data=data, filename=att.filename, mime_type=att.mime_type))
        try:
            msg = build_message(self.settings, message, files)
        except ValueError as exc:
            raise PermanentSendError(f"invalid recipient address {message.recipient_id!r}: {exc}") from exc
        await send_mail(msg, self.settings, self.secrets)
        return SendResult(external_id=str(msg["Message-ID"]).strip().strip("<>"))

    async def fetch_attachment(self, attachment: Attachment) -> FetchedFile:
        """Inbound files are already in storage; load them back."""
        if not attachment.storage_key:
            raise KeyError("attachment has no storage key")
        data = await self.runtime.storage.load(attachment.storage_key)
        return FetchedFile(data=data, filename=attachment.filename, mime_type=attachment.mime_type)

    def smtp_receiver(self, sink: IngestSink) -> SmtpReceiver:
        """An SMTP server that accepts mail for this inbox (start()/stop() it)."""

        async def ingest(raw: bytes) -> str | None:
            await self.ingest_raw(raw, sink)
            return None  # stored, ignored on purpose (logged), or kept as unroutable: never refused

        allowed = self.settings.allowed_recipients or [self.settings.address]
        return SmtpReceiver(
            ingest,
            host=self.settings.smtp_listen_host,
            port=self.settings.smtp_listen_port,
            max_message_bytes=self.settings.max_message_bytes,
            allowed_recipients=allowed,
            hostname=self.settings.domain,
        )

    async def poll(self, sink: IngestSink) -> AsyncIterator[None]:
        """Run the SMTP listener (receive_smtp) and/or poll IMAP, yielding after each batch."""
        receiver = self.smtp_receiver(sink) if self.settings.receive_smtp else None
        poller = None
        if self.settings.imap_host:
            poller = ImapPoller(self.settings, self.secrets, self.runtime.state,
                                lambda raw: self.ingest_raw(raw, sink))
        if receiver is None and poller is None:
            raise RuntimeError("email inbox has neither imap_host nor receive_smtp configured")
        if receiver is not None:
            await receiver.start()
        backoff = self.settings.imap_poll_interval
        try:
            while True:
                delay = self.settings.imap_poll_interval
                if poller is not None:
                    try:
                        await poller.poll_once()
                    except Exception as exc:  # noqa: BLE001 - network / server trouble: reconnect later
                        log.warning("IMAP poll of %s failed: %s", self.settings.imap_host, exc)
                        await poller.close()
                        backoff = min(backoff * 2, 900)
                        delay = backoff
                    else:
                        backoff = self.settings.imap_poll_interval
                yield
                await asyncio.sleep(delay)
        finally:
            if poller is not None:
                await poller.close()
            if receiver is not None:
                await receiver.stop()

    async def test_connection(self) -> str:
        """Log in to SMTP (and IMAP when configured) to check the credentials."""
        import aiosmtplib

        s = self.settings
        try:
            smtp = aiosmtplib.SMTP(hostname=s.smtp_host or "localhost", port=s.smtp_port or (465 if s.smtp_ssl else 587),
                                   use_tls=s.smtp_ssl, start_tls=False if s.smtp_ssl else s.smtp_starttls,
                                   timeout=s.smtp_timeout)
            async with smtp:
                if s.smtp_username:
                    await smtp.login(s.smtp_username, self.secrets.smtp_password or "")
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientSendError(f"SMTP check failed: {exc}") from exc
        if s.imap_host:
            poller = ImapPoller(s, self.secrets, self.runtime.state, lambda raw: asyncio.sleep(0))
            try:
                await poller.connect()
            except Exception as exc:  # noqa: BLE001
                raise TransientSendError(f"IMAP check failed: {exc}") from exc
            finally:
                await poller.close()
        return "ok"
