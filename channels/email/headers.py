"""Header decoding that survives real mail, on the standard library's header registry.

`policy.default` parses the structure: encoded words (also those with spaces inside, as some
clients write them), quoted display names with commas, groups, comments. Before it sees a value we
fix what it cannot know: undeclared 8-bit bytes and raw ISO-2022-JP escapes are decoded (with
detection), and runs of encoded words in one charset are joined and re-encoded as one UTF-8 word
(senders split multi-byte characters across words, and label GBK text as GB2312; the registry
would decode each word alone with the label's codec and replace what does not fit).

Addresses are checked with email-validator (syntax only, no DNS): an invalid one is reported, not
turned into a contact.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.policy
import re
from dataclasses import dataclass, field
from email import _header_value_parser as _parser
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

from channels.email.charsets import codec_for, decode_text

# Lenient on purpose: spaces inside the encoded text occur in real mail (RFC 2047 forbids them).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?(.*?)\?=")
_ONE_B_WORD = re.compile(r"=\?([A-Za-z0-9_.:-]+)\?[bB]\?([A-Za-z0-9+/]*={0,2})\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_MSGID = re.compile(r"<([^<>\s]+)>")
_POLICY = email.policy.default
# Parse problems that mean the mailbox itself is unusable (not merely a sloppy encoded word).
_BAD_MAILBOX = ("invalid", "quoted string", "local part", "local-part", "no domain", "between words",
                "expected", "unexpected")
_DAEMONS = ("mailer-daemon", "postmaster")


def unfold(value: str) -> str:
    """Join folded header lines."""
    return _FOLD.sub("", value) if "\n" in value else value


def _raw_bytes_text(value: str) -> str:
    # The parser keeps undeclared 8-bit header bytes as surrogate escapes; decode them properly.
    if value.isascii():
        if "\x1b$" in value or "\x1b(" in value:  # raw ISO-2022-JP outside encoded words
            return decode_text(value.encode("ascii"), "iso-2022-jp")[0]
        return value
    try:
        value.encode("utf-8")
        return value  # already text (a str header given by the caller)
    except UnicodeEncodeError:
        data = value.encode("utf-8", "surrogateescape")
        return decode_text(data, None)[0]


def _word_bytes(encoding: str, text: str) -> bytes:
    if encoding in "bB":
        text = text.strip().rstrip("=")
        text += "=" * (-len(text) % 4)
        try:
            return binascii.a2b_base64(text.encode("ascii", "replace"))
        except binascii.Error:
            return text.encode("ascii", "replace")
    return binascii.a2b_qp(text.encode("ascii", "replace"), header=True)


def _needs_rewrite(words: list[re.Match[str]]) -> bool:
    if len(words) > 1:
        return True
    charset, _, text = words[0].groups()
    label = charset.split("*", 1)[0].lower()
    codec = codec_for(label)
    # The registry would decode with the label's own codec: rewrite where ours differs (GB2312 -> GB18030).
    return codec is None or codec != _registry_codec(label) or " " in text


@lru_cache(maxsize=256)
def _registry_codec(label: str) -> str | None:
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _normalize_words(value: str) -> str:
    """Join runs of encoded words of one charset and re-encode them as one UTF-8 word."""
    words = list(_ENCODED_WORD.finditer(value))
    if not words:
        return value
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(words):
        run = [words[i]]
        charset = words[i].group(1).split("*", 1)[0].lower()
        j = i + 1
        while j < len(words):
            gap = value[run[-1].end():words[j].start()]
            if (gap and not gap.isspace()) or words[j].group(1).split("*", 1)[0].lower() != charset:
                break
            run.append(words[j])
            j += 1
        out.append(value[pos:run[0].start()])
        if _needs_rewrite(run):
            data = b"".join(_word_bytes(w.group(2), w.group(3)) for w in run)
            text = decode_text(data, charset)[0]
            out.append(f"=?utf-8?b?{base64.b64encode(text.encode('utf-8')).decode('ascii')}?=")
        else:
            out.append(value[run[0].start():run[-1].end()])
        pos = run[-1].end()
        i = j
    out.append(value[pos:])
    return "".join(out)


def _prepare(value: str) -> str:
    value = _raw_bytes_text(unfold(value))
    return _normalize_words(value) if "=?" in value else value


@lru_cache(maxsize=4096)
def decode_header(value: str | None) -> str:
    """Decode a raw unstructured header value to text (unfolded, encoded words decoded). Never raises."""
    if not value:
        return ""
    value = _prepare(value)
    if "=?" not in value:
        return value.strip()
    single = _ONE_B_WORD.fullmatch(value.strip())
    if single is not None:  # the commonest shape, decoded as the registry would, without its parser
        try:
            data = base64.b64decode(single.group(2), validate=True)
        except binascii.Error:
            pass
        else:
            text, warning = decode_text(data, single.group(1))
            if warning is None:
                return text.strip()
    try:
        return str(_POLICY.header_factory("x-scrm-text", value)).strip()
    except Exception:  # noqa: BLE001 - the registry gave up: show the value as it came
        return value.strip()


@dataclass
class Mailboxes:
    """The addresses of one or more address headers: usable ones and the raw text of invalid ones."""

    valid: list[tuple[str, str]] = field(default_factory=list)  # (display name, lower-cased address)
    invalid: list[str] = field(default_factory=list)


@lru_cache(maxsize=8192)
def is_valid_address(addr: str) -> bool:
    """Syntax check of an addr-spec (email-validator, no DNS)."""
    try:
        validate_email(addr, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError:
        return False
    return True


# The common shapes `Name <addr>`, `"Name" <addr>` and a bare `addr`, in plain ASCII (encoded words
# allowed in the name): the registry's answer for these, without the cost of its full parser. Any
# other shape (comments, groups, specials, several addresses) goes to the parser.
_ATOM_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_SIMPLE_MAILBOX = re.compile(
    rf"[ \t]*(?:(?:(?P<name>[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~. \t-]*?)|\"(?P<quoted>[^\"\\\r\n]*)\")[ \t]*"
    rf"<(?P<addr>{_ATOM_ADDR})>|(?P<bare>{_ATOM_ADDR}))[ \t]*"
)


def _simple_mailbox(value: str) -> tuple[str, str] | None:
    match = _SIMPLE_MAILBOX.fullmatch(value) if value.isascii() else None
    if match is None:
        return None
    addr = match.group("addr") or match.group("bare")
    if not is_valid_address(addr):
        return None  # let the parser report it as written
    name = match.group("quoted") if match.group("quoted") is not None else (match.group("name") or "")
    name = " ".join(name.split())
    return (decode_header(name) if "=?" in name else name), addr.lower()


@lru_cache(maxsize=4096)
def _mailboxes(value: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    simple = _simple_mailbox(unfold(value))
    if simple is not None:
        return (simple,), ()
    prepared = _prepare(value)
    try:
        # The registry's own address-list parser (AddressHeader.parse calls it), used directly for
        # the defects of each address: one broken address must not taint the others of a list.
        address_list, _rest = _parser.get_address_list(prepared)
    except Exception:  # noqa: BLE001 - unparseable: nothing usable, keep what was written
        return (), (decode_header(value),)
    valid: list[tuple[str, str]] = []
    invalid: list[str] = []
    for address in address_list.addresses:
        written = str(address).strip()
        try:
            _sort_address(address, written, valid, invalid)
        except Exception:  # noqa: BLE001 - a token shape the parser itself did not expect: invalid, kept as written
            invalid.append(written)
    return tuple(valid), tuple(dict.fromkeys(invalid))


def _sort_address(address: Any, written: str, valid: list[tuple[str, str]], invalid: list[str]) -> None:
    """Put one parsed address into `valid` or `invalid` (its own defects decide, not its neighbours')."""
    defects = [str(d).lower() for d in address.all_defects]
    broken = any(m in d for d in defects for m in _BAD_MAILBOX) or ("<" not in written and ">" in written)
    mailboxes = [m for m in address.all_mailboxes if hasattr(m, "addr_spec")]
    for mailbox in mailboxes:
        addr = (mailbox.addr_spec or "").strip()
        name = mailbox.display_name or ""
        if not name and "(" in written:
            name = decode_header(parseaddr(written)[0])  # old style: "user@host (Full Name)"
        if addr.lower() in _DAEMONS:
            valid.append((name, addr.lower()))
        elif not broken and "@" in addr and is_valid_address(addr):
            valid.append((name, addr.lower()))
        elif written and written != "<>":
            invalid.append(written)
    if not mailboxes and written and ":" not in written and written != "<>":
        invalid.append(written)  # not even an address shape ("undisclosed-recipients:;" is fine)


def parse_mailboxes(values: list[str]) -> Mailboxes:
    """Valid and invalid addresses of raw address header values."""
    result = Mailboxes()
    for value in values:
        valid, invalid = _mailboxes(value)
        result.valid.extend(valid)
        result.invalid.extend(invalid)
    return result


def parse_addresses(values: list[str]) -> list[tuple[str, str]]:
    """(display name, lower-cased address) pairs from raw address headers; invalid ones dropped."""
    return parse_mailboxes(values).valid


def parse_msgids(value: str | None) -> list[str]:
    """Message-IDs (without angle brackets) in a Message-ID / In-Reply-To / References value."""
    if not value:
        return []
    ids = _MSGID.findall(value)
    if not ids:
        bare = value.strip()
        return [bare] if bare and " " not in bare and "@" in bare else []
    return ids
