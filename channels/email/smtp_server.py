"""An SMTP receiving server (aiosmtpd) for deployments that forward mail to us.

It runs in the application's event loop (not aiosmtpd's Controller thread) so the sink and the
database session live in one loop. The sender gets 250 only after the sink committed the mail
(also a mail without a usable sender: it is kept for an admin, not refused); 451 when storing
failed (the sending MTA retries later), 550 for recipients we do not serve, 552 when the mail is
over the size limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

# Called with the raw mail; returns None when accepted, or a reason to refuse it for good.
IngestRaw = Callable[[bytes], Awaitable[str | None]]


class _Handler:
    def __init__(self, ingest: IngestRaw, allowed: Iterable[str], max_bytes: int) -> None:
        self.ingest = ingest
        self.allowed = {a.strip().lower() for a in allowed}
        self.max_bytes = max_bytes

    def _allowed(self, address: str) -> bool:
        address = address.strip().lower()
        domain = "@" + address.rsplit("@", 1)[-1]
        return address in self.allowed or domain in self.allowed

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not self._allowed(address):
            log.info("SMTP receiver refused recipient %s", address)
            return f"550 5.1.1 <{address}>: recipient not accepted here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content or b""
        raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
        if len(raw) > self.max_bytes:
            return "552 5.3.4 message exceeds the size limit"
        if envelope.mail_from is not None:
            # As an MTA does at final delivery (RFC 5321 4.4): the envelope sender becomes Return-Path,
            # the last fallback for a reply address, and "<>" marks machine mail.
            raw = f"Return-Path: <{envelope.mail_from.strip('<>')}>\r\n".encode("utf-8", "replace") + raw
        try:
            refusal = await self.ingest(raw)
        except Exception:  # noqa: BLE001 - the sender must retry; we log for the admin
            log.exception("SMTP receiver could not store a mail from %s", envelope.mail_from)
            return "451 4.3.0 temporary failure storing the message, try again later"
        if refusal:
            return f"550 5.6.0 message refused: {refusal}"
        return "250 2.0.0 OK: message stored"


class SmtpReceiver:
    """Accepts mail over SMTP on host:port and hands each mail to `ingest`."""

    def __init__(
        self,
        ingest: IngestRaw,
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        allowed_recipients: Iterable[str],
        hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.hostname = hostname
        self.handler = _Handler(ingest, allowed_recipients, max_message_bytes)
        self._server: asyncio.AbstractServer | None = None

    def _protocol(self) -> Any:
        return SMTP(
            self.handler,
            data_size_limit=self.max_message_bytes,
            enable_SMTPUTF8=True,
            hostname=self.hostname,
            ident="scrm",
        )

    async def start(self) -> None:
        """Listen; with port 0 a free port is chosen and stored in `port`."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("SMTP receiver listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening and close open sessions."""
        if self._server is not None:
            self._server.close()
            if hasattr(self._server, "close_clients"):  # Python >= 3.13
                self._server.close_clients()
            await self._server.wait_closed()
            self._server = None
