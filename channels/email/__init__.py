"""Email channel (IMAP / SMTP). Importing the package registers the adapter.

Inside this package `import email` is the standard library (absolute imports); no module here is
named after a stdlib module.
"""

from channels.email.adapter import EmailAdapter

__all__ = ["EmailAdapter"]
