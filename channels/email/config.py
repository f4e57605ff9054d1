"""Validated settings and secrets of an email inbox."""

from __future__ import annotations

from pydantic import Field, model_validator

from channels.base import AdapterSettings


class EmailSettings(AdapterSettings):
    """Inbox settings: the address, SMTP for sending, IMAP or an SMTP listener for receiving."""

    address: str
    from_name: str | None = None
    domain: str | None = None  # Message-ID domain; defaults to the address's domain
    smtp_host: str | None = None
    smtp_port: int | None = None  # default 465 with smtp_ssl, else 587 (25 for local relays)
    smtp_starttls: bool | None = None  # None: upgrade when the server offers STARTTLS
    smtp_ssl: bool = False
    smtp_username: str | None = None
    smtp_timeout: float = 30.0
    imap_host: str | None = None
    imap_port: int | None = None  # default 993 with imap_ssl, else 143
    imap_ssl: bool = True
    imap_starttls: bool = False
    imap_username: str | None = None
    imap_folder: str = "INBOX"
    imap_poll_interval: float = Field(default=60.0, gt=0)
    imap_batch_size: int = Field(default=50, gt=0)
    receive_smtp: bool = False
    smtp_listen_host: str = "127.0.0.1"
    smtp_listen_port: int = 2525
    max_message_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    allowed_recipients: list[str] = Field(default_factory=list)  # empty: only `address`
    keep_raw: bool = False  # store the raw source of every mail, not only undecodable ones

    @model_validator(mode="after")
    def _check(self) -> EmailSettings:
        if "@" not in self.address:
            raise ValueError("address must be an email address")
        self.address = self.address.strip().lower()
        if self.domain is None:
            self.domain = self.address.split("@", 1)[1]
        return self


class EmailSecrets(AdapterSettings):
    smtp_password: str | None = None
    imap_password: str | None = None
