"""Benchmark: our full inbound email pipeline vs. plain `email.message_from_bytes` on one corpus.

Generates mixed mail (UTF-8, GB2312 with GBK-only characters, GB18030, Big5, KOI8-R, Latin-1;
one in ten without a charset label, so charset detection runs as in production; attachments;
quoted replies in English/Outlook/Gmail-Chinese/QQ/HTML styles; threads), then
parses it twice in the same run: the stdlib baseline, and ours (decoding, quote stripping,
bounce/loop checks, translation to InboundMessage, thread lookup in a dict of known Message-IDs).
Prints mails per CPU second and tracemalloc peak of both, and one final BENCH line.
"""

from __future__ import annotations

import argparse
import base64
import email
import random
import re
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from channels.email.inbound import translate  # noqa: E402
from channels.email.parse import parse_mail  # noqa: E402
from channels.email.threading import resolve_thread  # noqa: E402

BODIES = [
    ("utf-8", "您好，我的订单还没有收到，请帮忙查询一下物流。"),
    ("gb2312", "朱镕基先生您好，喆和堃的订单已经发货，请注意查收。"),
    ("gb18030", "收到了😀谢谢，发票抬头请写公司名称。"),
    ("big5", "您好，請問我的訂單什麼時候到？謝謝。"),
    ("koi8-r", "Здравствуйте, где мой заказ? Спасибо."),
    ("iso-8859-1", "Bonjour, où est ma commande ? Merci beaucoup."),
]
QUOTES = [
    "\n\nOn Mon, Mar 4, 2024 at 9:00 AM Support <support@example.com> wrote:\n> Please restart.\n> Thanks\n",
    "\n\n发件人: 客服 <support@example.com>\n发送时间: 2024年3月4日 9:00\n收件人: 客户\n主题: 订单\n\n请提供订单号。\n",
    "\n\n在 2024年3月4日周一 09:00，客服 <support@example.com> 写道：\n> 请重启应用。\n",
    "\n\n------------------ 原始邮件 ------------------\n发件人: \"客服\"<support@example.com>;\n\n请提供订单号。\n",
    "",
]


def _encode_word(text: str, charset: str) -> str:
    codec = "gb18030" if charset == "gb2312" else charset
    return f"=?{charset}?B?{base64.b64encode(text.encode(codec)).decode()}?="


def make_corpus(n: int, seed: int = 7) -> list[bytes]:
    """n generated mails; about a third reply to earlier ones, a fifth carry attachments."""
    rnd = random.Random(seed)
    blob = base64.encodebytes(bytes(rnd.getrandbits(8) for _ in range(12_000))).decode()
    corpus = []
    for i in range(n):
        charset, body = BODIES[i % len(BODIES)]
        codec = "gb18030" if charset == "gb2312" else charset
        quote = QUOTES[i % len(QUOTES)] if i % 3 else ""
        text = (body + quote).encode(codec, "replace")
        refs = ""
        if i > 10 and i % 3:
            earlier = [rnd.randrange(i) for _ in range(3)]
            refs = f"In-Reply-To: <m{earlier[0]}@bench>\r\nReferences: " + " ".join(f"<m{e}@bench>" for e in earlier) + "\r\n"
        subject = _encode_word(body[:12], charset) + (f" [#{i}]" if i % 7 == 0 else "")
        head = (
            f"From: {_encode_word('客户' + str(i), 'utf-8')} <customer{i % 97}@example.com>\r\n"
            f"To: support@example.com\r\nCc: other{i % 5}@example.com\r\nSubject: {subject}\r\n"
            f"Date: Mon, 04 Mar 2024 10:{i % 60:02d}:00 +0800\r\nMessage-ID: <m{i}@bench>\r\n{refs}MIME-Version: 1.0\r\n"
        )
        if i % 5 == 0:
            raw = (head + f'Content-Type: multipart/mixed; boundary="B{i}"\r\n\r\n--B{i}\r\n'
                   f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   + base64.encodebytes(text).decode() + f"--B{i}\r\nContent-Type: application/pdf\r\n"
                   'Content-Disposition: attachment; filename="doc.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
                   + blob + f"--B{i}--\r\n").encode()
        elif i % 5 == 1:
            html = "<div>" + body + "</div><div class=\"gmail_quote\"><blockquote>old</blockquote></div>"
            raw = (head + f'Content-Type: multipart/alternative; boundary="A{i}"\r\n\r\n--A{i}\r\n'
                   f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   + base64.encodebytes(text).decode() + f"--A{i}\r\nContent-Type: text/html; charset=utf-8\r\n"
                   "Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(html.encode()).decode() + f"--A{i}--\r\n").encode()
        elif i % 10 == 3:  # no charset declared: detection (charset-normalizer) decides
            raw = (head + "Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").encode() + text
        else:
            raw = (head + f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").encode() + text
        corpus.append(raw)
    return corpus


def stdlib(raw: bytes, known: dict[str, int]) -> object:
    return email.message_from_bytes(raw)


def ours(raw: bytes, known: dict[str, int]) -> object:
    mail = parse_mail(raw)
    result = translate(mail, own_address="support@example.com", stored=[(p, "k") for p in mail.parts])
    for item in result.items:
        refs = getattr(item, "thread_refs", ())
        conversation = resolve_thread(refs, getattr(item, "conversation_hint", None), known)
        known[item.external_id] = conversation if conversation is not None else len(known)
    return result


def _fresh_caches() -> None:
    """Each timed pass starts cold, as a server meeting this mail for the first time would (the stdlib
    parser compiles a regex per MIME boundary: without a purge a second pass finds them all cached)."""
    from channels.email import headers, parse

    re.purge()
    for cached in (headers.decode_header, headers._mailboxes, headers.is_valid_address, parse._parsed_header):
        cached.cache_clear()


def paired_rates(corpus: list[bytes], chunk: int = 25) -> tuple[float, float]:
    """(stdlib, ours) mails per CPU second over the corpus, timed chunk by chunk in turn: on a shared
    machine the load changes from one second to the next; alternating every few milliseconds and
    counting this process's CPU time (not the wall clock) gives both the same conditions."""
    _fresh_caches()
    s_known: dict[str, int] = {}
    o_known: dict[str, int] = {}
    s_time = o_time = 0.0
    for start in range(0, len(corpus), chunk):
        part = corpus[start:start + chunk]
        t0 = time.process_time()
        for raw in part:
            stdlib(raw, s_known)
        t1 = time.process_time()
        for raw in part:
            ours(raw, o_known)
        t2 = time.process_time()
        s_time += t1 - t0
        o_time += t2 - t1
    return len(corpus) / s_time, len(corpus) / o_time


def peak_mb(fn: Callable[[bytes, dict[str, int]], object], corpus: list[bytes]) -> float:
    """tracemalloc peak (MB) of fn over the first 300 mails."""
    _fresh_caches()
    known: dict[str, int] = {}
    tracemalloc.start()
    for raw in corpus[:300]:
        fn(raw, known)
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller corpus, under a minute")
    parser.add_argument("-n", type=int, default=None, help="number of mails (default 3000, quick 1000)")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds (default 5, quick 3)")
    args = parser.parse_args()
    n = args.n or (1000 if args.quick else 3000)
    rounds = args.rounds or (3 if args.quick else 5)
    corpus = make_corpus(n)
    mb = sum(map(len, corpus)) / 1e6
    print(f"corpus: {n} mails, {mb:.1f} MB; {rounds} rounds, each timing the stdlib and ours in turn")
    stdlib(corpus[0], {}), ours(corpus[0], {})  # warm imports
    # Each round times both on the same corpus, alternating every 25 mails; the headline is the median
    # of the rounds' ratios.
    pairs = [paired_rates(corpus) for _ in range(rounds)]
    ratio = statistics.median(o / s for s, o in pairs)
    s_rate = statistics.median(s for s, _ in pairs)
    o_rate = statistics.median(o for _, o in pairs)
    s_peak, o_peak = peak_mb(stdlib, corpus), peak_mb(ours, corpus)
    print(f"stdlib email.message_from_bytes: {s_rate:8.0f} mails per CPU second  peak {s_peak:6.2f} MB")
    print(f"ours (parse+decode+detect+quotes+threading): {o_rate:8.0f} mails per CPU second  peak {o_peak:6.2f} MB")
    print("round ratios: " + " ".join(f"{o / s:.3f}" for s, o in pairs))
    print(f"ratio ours/stdlib = {ratio:.2f} (target >= 0.30)")
    print(f"BENCH email_parse ratio={ratio:.3f} ours_mails_per_s={o_rate:.0f} stdlib_mails_per_s={s_rate:.0f} peak_mb={o_peak:.2f}")


if __name__ == "__main__":
    main()
