"""Email channel (IMAP / SMTP). Importing the package registers the adapter.
May import: scrm.domain, channels (base, registry) and mail libraries (aioimaplib, aiosmtplib, ...); no other scrm.

Inside this package `import email` is the standard library (absolute imports); no module here is
named after a stdlib module.
"""

from channels.email.adapter import EmailAdapter

__all__ = ["EmailAdapter"]
