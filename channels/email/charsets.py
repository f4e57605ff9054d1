"""Charset labels as mail clients really use them, detection when a label is missing or wrong,
and decoding that never crashes.

Chinese mail is routinely labelled GB2312 while containing GBK/GB18030-only characters (e.g. 镕,
䶮, 喆), so every GB label decodes as GB18030, a strict superset. Big5 is decoded as Big5-HKSCS
for the same reason; ISO-8859-1 / ASCII labels as Windows-1252 (what senders actually mean).

7-bit text is not always ASCII: ISO-2022-JP (and -KR, HZ, UTF-7) encode with escape sequences,
so such text goes through its declared codec even when every byte is below 0x80.

Undeclared 8-bit text, or text its label does not fit, is detected with charset-normalizer (as
`requests` does) among the charsets mail really uses; ties go to the likelier one for our users.
"""

from __future__ import annotations

import codecs

from charset_normalizer import from_bytes

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
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "windows-31j": "cp932",
    # ISO-2022-JP as Japanese mailers really send it (NEC / IBM extensions, half-width kana).
    "iso-2022-jp": "iso2022_jp_ext",
    "csiso2022jp": "iso2022_jp_ext",
    "tis-620": "cp874",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
}
# Codecs whose text is 7-bit but not ASCII: decode them even when every byte is ASCII.
_STATEFUL = {"iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3",
             "iso2022_jp_ext", "iso2022_kr", "utf-7", "hz"}
# What detection may answer, most likely first for a Chinese-first help desk: equally good
# candidates (a short text fits several) are decided by this order.
_DETECT = ["utf_8", "gb18030", "cp1252", "big5", "cp932", "euc_jp", "cp949", "cp1251", "koi8_r", "cp1250",
           "iso8859_15", "iso8859_2", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp874"]
_RANK = {name: i for i, name in enumerate(_DETECT)}
_DETECTED_SUPERSET = {"gb2312": "gb18030", "gbk": "gb18030", "big5": "big5hkscs", "shift_jis": "cp932",
                      "euc_kr": "cp949", "latin_1": "cp1252", "iso8859_1": "cp1252", "ascii": "utf-8"}


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


def detect(data: bytes) -> str | None:
    """The most likely codec of undeclared 8-bit text, or None when nothing fits."""
    if b"\x1b$" in data or b"\x1b(" in data:
        return "iso2022_jp_ext"  # undeclared ISO-2022-JP: its escapes say what it is
    matches = from_bytes(data[:32_768], cp_isolation=_DETECT, preemptive_behaviour=False)
    best = matches.best()
    if best is None:
        return None
    candidates: set[str] = set()
    for match in matches:
        if match.chaos - best.chaos <= 0.1 and best.coherence - match.coherence <= 0.05:
            candidates.update(match.could_be_from_charset or [match.encoding])
    if len(candidates) > 1:
        candidates = {c for c in candidates if not _mostly_halfwidth_kana(data, c)} or candidates
    name = min(candidates, key=lambda c: _RANK.get(c, len(_RANK)))
    return _DETECTED_SUPERSET.get(name, name)


def _mostly_halfwidth_kana(data: bytes, codec: str) -> bool:
    # Cyrillic or Greek bytes read as Shift_JIS become half-width katakana, which real Japanese
    # mail hardly uses: among equally good candidates that reading is the wrong one.
    if codec not in ("cp932", "shift_jis", "shift_jis_2004"):
        return False
    text = data.decode(codec, "replace")
    kana = sum(1 for ch in text if "\uff61" <= ch <= "\uff9f")
    return kana * 3 > sum(1 for ch in text if not ch.isascii())


def decode_text(data: bytes, label: str | None) -> tuple[str, str | None]:
    """Decode body/header bytes; returns (text, warning or None). Never raises."""
    codec = codec_for(label)
    if data.isascii() and codec not in _STATEFUL:
        if b"\x1b" in data and codec is None and b"\x1b$" in data:
            codec = "iso2022_jp_ext"  # undeclared ISO-2022-JP
        else:
            return data.decode("ascii"), None
    if codec is not None and codec != "ascii":
        try:
            return data.decode(codec), None
        except UnicodeDecodeError:
            if codec == "cp1252":  # bytes cp1252 leaves undefined are still Latin-1
                return data.decode("latin-1"), None
    # No label, or the label did not fit: UTF-8 if it is valid (it rarely is by accident), else detect.
    guess = "utf-8" if _is_utf8(data) else detect(data)
    if guess is not None and guess != codec:
        try:
            text = data.decode(guess)
        except (UnicodeDecodeError, LookupError):
            pass
        else:
            if label is None or codec == "ascii":
                return text, None if guess == "utf-8" else f"no charset declared; detected {guess}"
            return text, f"declared charset {label!r} did not fit; detected {guess}"
    text = data.decode(codec if codec and codec != "ascii" else "utf-8", errors="replace")
    return text, f"could not fully decode text declared as {label or 'unknown'}; some characters are replaced"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
