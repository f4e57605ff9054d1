"""OutboundMessage -> a UTF-8 MIME mail sent over SMTP with aiosmtplib.

Replies keep the thread: In-Reply-To / References from the conversation, one "Re: " and the
"[#id]" subject token. Automatic mail carries Auto-Submitted: auto-replied (RFC 3834) so other
robots do not answer it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

import aiosmtplib

from channels.base import FetchedFile, choices_as_text
from channels.email.config import EmailSecrets, EmailSettings
from channels.email.threading import reply_subject
from scrm.domain import OutboundMessage, PermanentSendError, TransientSendError


def _ids(value: object) -> list[str]:
    if not value:
        return []
    items = value.split() if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return [str(i).strip().strip("<>") for i in items if str(i).strip().strip("<>")]


def build_message(
    settings: EmailSettings, message: OutboundMessage, files: Sequence[FetchedFile] = ()
) -> EmailMessage:
    """The MIME mail for one delivery (Message-ID generated with the inbox's domain)."""
    meta = message.metadata
    msg = EmailMessage()
    # formataddr encodes a Chinese display name as an RFC 2047 word (utf-8).
    msg["From"] = formataddr((settings.from_name or "", settings.address), charset="utf-8")
    Address(addr_spec=message.recipient_id)  # raises ValueError for an invalid address
    msg["To"] = message.recipient_id
    # An agent's reply names the customer's last mail (its Message-ID is the stored external id).
    in_reply_to = _ids(meta.get("in_reply_to") or message.reply_to_external_id)[:1]
    references = _ids(meta.get("references"))
    if in_reply_to and in_reply_to[0] not in references:
        references.append(in_reply_to[0])
    subject = str(meta.get("subject") or "")
    if in_reply_to or meta.get("reply"):
        subject = reply_subject(subject, message.conversation_id)
    elif message.conversation_id is not None and f"[#{message.conversation_id}]" not in subject:
        subject = f"[#{message.conversation_id}] {subject or settings.from_name or ''}".strip()
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain=settings.domain)
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to[0]}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references[-20:])
    if message.automatic:
        msg["Auto-Submitted"] = "auto-replied"
    text = choices_as_text(message.text, message.choices) if message.choices else (message.text or "")
    links = [a.url for a in message.attachments if a.url and not a.storage_key]
    if links:
        text = "\n".join([text, *links]).strip()
    msg.set_content(text or " ", charset="utf-8")
    for f in files:
        maintype, _, subtype = (f.mime_type or "application/octet-stream").partition("/")
        msg.add_attachment(f.data, maintype=maintype, subtype=subtype or "octet-stream", filename=f.filename or "file")
    return msg


_local_hostname: str | None = None


async def local_hostname() -> str:
    """This host's name for EHLO, looked up once per process.

    aiosmtplib would otherwise call socket.getfqdn() (a DNS lookup, in a thread) for every mail.
    """
    global _local_hostname
    if _local_hostname is None:
        _local_hostname = await asyncio.get_running_loop().run_in_executor(None, socket.getfqdn) or "localhost"
    return _local_hostname


async def send_mail(msg: EmailMessage, settings: EmailSettings, secrets: EmailSecrets) -> None:
    """Hand the mail to the SMTP server; map failures to transient / permanent send errors."""
    port = settings.smtp_port or (465 if settings.smtp_ssl else 587)
    try:
        await aiosmtplib.send(
            msg,
            hostname=settings.smtp_host or "localhost",
            port=port,
            local_hostname=await local_hostname(),
            username=settings.smtp_username,
            password=secrets.smtp_password if settings.smtp_username else None,
            use_tls=settings.smtp_ssl,
            start_tls=False if settings.smtp_ssl else settings.smtp_starttls,
            timeout=settings.smtp_timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        if not exc.recipients:
            raise TransientSendError(str(exc)) from exc
        raise _response_error(exc.recipients[0]) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _response_error(exc) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TransientSendError(f"SMTP connection failed: {exc}") from exc


def _response_error(exc: aiosmtplib.SMTPResponseException) -> Exception:
    text = f"{exc.code} {exc.message}".strip()
    if 500 <= exc.code < 600:
        # 550/551/553 for the recipient: the address does not exist or is refused.
        unreachable = isinstance(exc, aiosmtplib.SMTPRecipientRefused) and exc.code in (550, 551, 553)
        return PermanentSendError(text, code=str(exc.code), contact_unreachable=unreachable)
    return TransientSendError(text, code=str(exc.code))
