"""Charset labels as mail clients really use them, and decoding that never crashes.

Chinese mail is routinely labelled GB2312 while containing GBK/GB18030-only characters (e.g. 镕,
䶮, 喆), so every GB label decodes as GB18030, a strict superset. Big5 is decoded as Big5-HKSCS
for the same reason; ISO-8859-1 / ASCII labels as Windows-1252 (what senders actually mean).
"""

from __future__ import annotations

import codecs

# Label (lower-cased) -> the superset codec that decodes what senders actually send.
_SUPERSETS: dict[str, str] = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "ms936": "gb18030",
    "euc-cn": "gb18030",
    "euccn": "gb18030",
    "x-euc-cn": "gb18030",
    "csgb2312": "gb18030",
    "chinese": "gb18030",
    "gb_2312-80": "gb18030",
    "gb18030": "gb18030",
    "big5": "big5hkscs",
    "big-5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "x-x-big5": "big5hkscs",
    "csbig5": "big5hkscs",
    "big5-hkscs": "big5hkscs",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "tis-620": "cp874",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
}


def codec_for(label: str | None) -> str | None:
    """The Python codec to decode text labelled `label`, or None if the label is unknown."""
    if not label:
        return None
    name = label.strip().strip('"').lower()
    name = _SUPERSETS.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_text(data: bytes, label: str | None) -> tuple[str, str | None]:
    """Decode body/header bytes; returns (text, warning or None). Never raises."""
    if data.isascii():
        return data.decode("ascii"), None
    codec = codec_for(label)
    if codec is not None and codec != "ascii":
        try:
            return data.decode(codec), None
        except UnicodeDecodeError:
            if codec == "cp1252":  # bytes cp1252 leaves undefined are still Latin-1
                return data.decode("latin-1"), None
    # Wrong or missing label: UTF-8 is the most likely truth, then GB18030 for Chinese mail.
    for guess in ("utf-8", "gb18030"):
        if guess == codec:
            continue
        try:
            text = data.decode(guess)
        except UnicodeDecodeError:
            continue
        if label is None or codec == "ascii":
            return text, None if guess == "utf-8" else f"no charset declared; decoded as {guess}"
        return text, f"declared charset {label!r} did not fit; decoded as {guess}"
    text = data.decode(codec or "utf-8", errors="replace")
    return text, f"could not fully decode text declared as {label or 'unknown'}; some characters are replaced"
