"""The email replay table: every fixture of ours has an expected outcome (sender, display name, subject,
a body excerpt; or kept as unroutable, a bounce, ignored on purpose). A new fixture without an entry
fails `test_every_fixture_has_an_expectation`."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from scrm.domain import ChannelEvent, ChannelEventKind, InboundMessage

FIXTURES = Path(__file__).parent / "fixtures"


class Mail(NamedTuple):
    """A customer message: From address (lower case), display name, subject, text excerpt."""

    address: str
    name: str | None
    subject: str
    excerpt: str


UNROUTABLE, BOUNCE, IGNORED = "unroutable", "bounce", "ignored"

EXPECTED: dict[str, Mail | str] = {
    "address__encoded_comma_display_name.eml": Mail('john.doe@example.com', 'Doe, John', 'Ticket ABC / 123', 'Please update ticket ABC / 123.'),
    "address__space_in_address.eml": UNROUTABLE,
    "address__trailing_bracket.eml": UNROUTABLE,
    "address__unbalanced_quote.eml": Mail('grace.h@example.com', 'Grace', 'quote', 'Hello from Grace'),
    "alternative__empty_plain.eml": Mail('olivia@example.com', 'Olivia', 'Broken blender', 'stopped working after two days'),
    "alternative__related_html_chinese_stub.eml": Mail('wangfang@example.cn', '王芳', '发票问题', '发票抬头写错了'),
    "alternative__see_html_stub.eml": Mail('olivia@example.com', 'Olivia', 'Broken blender', 'send a replacement or refund me'),
    "alternative__short_plain.eml": Mail('olivia@example.com', 'Olivia', 'Broken blender', 'The motor makes a grinding noise'),
    "attachment__forwarded_message_encoded_subject.eml": Mail('nora@example.com', 'Nora', 'Fwd: order confirmation', 'See the attached confirmation.'),
    "attachment__inline_image_and_pdf.eml": Mail('ann@example.com', 'Ann', 'Photo', 'See photo'),
    "attachment__uuencode_in_body.eml": Mail('mia@example.com', 'Mia', 'Old client export', 'Here is the file.'),
    "attachment__x_uuencode.eml": Mail('leo@example.com', 'Leo', 'Export attached', 'The export is attached.'),
    "attachment__x_uuencode_without_begin.eml": Mail('leo@example.com', 'Leo', 'Export attached', 'The export is attached.'),
    "charset__big5_quoted_printable.eml": Mail('chen@example.tw', None, '請問退款', '您好，請問我的訂單什麼時候到？'),
    "charset__gb18030_four_byte.eml": Mail('wang@example.cn', None, '表情😀', '收到了😀谢谢€'),
    "charset__gb2312_with_gbk_chars.eml": Mail('zhu@example.cn', '朱镕基', '关于镕的订单', '朱镕基先生您好，喆和堃的订单已经发货。'),
    "charset__gbk_base64.eml": Mail('li@example.cn', None, '您好', '您好，我想查询喆的退款进度。'),
    "charset__iso2022jp.eml": Mail('yamada@example.jp', '山田太郎', '注文について', 'お世話になっております。注文の件でご連絡しました。'),
    "charset__iso2022jp_raw_subject.eml": Mail('yamada@example.jp', None, '注文の確認', '確認お願いします。'),
    "charset__koi8r.eml": Mail('ivan@example.ru', None, 'Привет', 'Привет, где мой заказ?'),
    "charset__latin1_labelled_utf8.eml": Mail('zoe@example.fr', 'Zoe', 'Commande', "Bonjour, où est ma commande ? Je l'atten"),
    "charset__latin1_undeclared.eml": Mail('juergen@example.de', 'Jürgen Weiß', 'Bestellung', 'Grüße aus München, die Bestellung ist no'),
    "charset__shift_jis_undeclared.eml": Mail('sato@example.jp', 'Sato', 'Order', 'お世話になっております。先日注文した商品がまだ届いておりません。確認をお願いいた'),
    "dsn__delayed.eml": IGNORED,
    "dsn__exim_x_failed_recipients.eml": BOUNCE,
    "dsn__hard_bounce.eml": BOUNCE,
    "dsn__mailbox_full.eml": BOUNCE,
    "header__blank_line_before_headers.eml": Mail('carol@example.org', 'Carol', '退货申请', '我想退货，订单号 A778。'),
    "header__encoded_word_with_spaces.eml": Mail('ken@example.com', 'Ken Adams', 'ABC / 123', 'See subject.'),
    "header__encoded_words_split_character.eml": Mail('zhang.san@example.com', '张三', '退款申请：订单号 12345', '请帮我处理退款。'),
    "header__garbage_line_before_headers.eml": Mail('bob.zhang@example.net', 'Bob Zhang', 'Invoice request', 'Please send me the invoice for March.'),
    "header__mbox_from_line.eml": Mail('ann@example.com', 'Ann Lee', 'Order 1001 not received', 'Hello, my order 1001 has not arrived yet'),
    "header__raw_utf8_subject.eml": Mail('zhao@example.com', '赵六', '没有编码的主题', '正文'),
    "loop__auto_submitted.eml": Mail('ann@example.com', 'Ann', 'Out of office', 'I am away.'),
    "loop__auto_submitted_no.eml": Mail('ann@example.com', 'Ann', 'Question', 'A real question.'),
    "loop__empty_return_path.eml": Mail('robot@example.com', 'Robot', 'Notice', 'Reply text.'),
    "loop__from_postmaster.eml": Mail('postmaster@example.com', None, 'Hello from the admin', 'Your mailbox is fine.'),
    "loop__list_unsubscribe.eml": Mail('news@example.com', 'News', 'Offers', 'Reply text.'),
    "loop__own_address.eml": IGNORED,
    "loop__precedence_bulk.eml": Mail('news@example.com', 'News', 'Newsletter', 'Reply text.'),
    "loop__x_autoreply.eml": Mail('ann@example.com', 'Ann', '自动回复: 退款', '我正在休假。'),
    "malformed__broken_base64.eml": Mail('ann@example.com', 'Ann', 'Broken', '您好你'),
    "malformed__no_message_id.eml": Mail('ann@example.com', 'Ann', 'No id', 'hello'),
    # A fuzzed sample (CPython's multipart/signed one, mutated) whose RFC 2231 parameters crash the
    # header registry: read plainly, the whole text kept, the raw source too.
    "malformed__rfc2231_parameters_break_the_parser.eml": Mail('aperson@example.cfrom', 'Anne Person', '', 'part 2'),
    "malformed__unknown_charset.eml": Mail('ann@example.com', 'Ann', 'x', 'café ÿþ'),
    "malformed__wrong_charset_label.eml": Mail('ann@example.com', 'Ann', 'Label', '其实是UTF-8'),
    "quote__alternative_prefers_plain.eml": Mail('ann@example.com', 'Ann', 'Re: Refund', 'Plain answer.'),
    "quote__english_folded_wrote.eml": Mail('ann@example.com', 'Ann', 'Re: Refund', 'Still broken.'),
    "quote__english_on_wrote.eml": Mail('ann@example.com', 'Ann', 'Re: [#1042] Refund', 'Thanks, that solved it!'),
    "quote__gmail_chinese.eml": Mail('zhou@example.cn', '周八', 'Re: 退款', '谢谢，问题解决了。'),
    "quote__gt_lines_only.eml": Mail('ann@example.com', 'Ann', 'Re: Refund', 'Yes please, the refund is missing.'),
    "quote__html_blockquote.eml": Mail('ann@example.com', 'Ann', 'Re: Refund', 'New answer here.'),
    "quote__html_gmail_quote.eml": Mail('ann@example.com', 'Ann', 'Re: Refund', 'Got it, thanks!'),
    "quote__html_outlook_divrplyfwdmsg.eml": Mail('bob@example.com', 'Bob', 'RE: Invoice', '我已付款，请确认。'),
    "quote__outlook_chinese.eml": Mail('liu@example.cn', '刘七', '答复: 发票', '好的，已收到发票。'),
    "quote__outlook_english.eml": Mail('bob@example.com', 'Bob', 'RE: Invoice', 'Please resend the invoice.'),
    "quote__qq_mail.eml": Mail('wu@qq.example', '吴九', '回复：订单查询', '订单号是 A123。'),
    "sender__invalid_from_with_reply_to.eml": Mail('frank@example.com', 'Frank', 'Question about warranty', 'Is the warranty two years?'),
    "sender__none.eml": UNROUTABLE,
    "sender__reply_to_only.eml": Mail('lisi@example.cn', '李四', 'Where is my parcel', 'My parcel is late.'),
    "sender__return_path_only.eml": Mail('erin@example.com', None, 'No from header', 'Sent from a broken script.'),
    "sender__sender_only.eml": Mail('forms@shop.example.com', 'Web Form', 'Contact form: refund', 'I would like a refund.'),
    "thread__changed_subject.eml": Mail('ann@example.com', 'Ann', 'Completely new topic', 'Reply text.'),
    "thread__reply_from_other_person.eml": Mail('carol@example.com', 'Carol', 'Re: Refund', 'Reply text.'),
    "thread__reply_with_references.eml": Mail('ann@example.com', 'Ann', 'Re: [#77] Refund', 'Reply text.'),
    "thread__reply_without_references.eml": Mail('ann@example.com', 'Ann', 'Re: Refund', 'Reply text.'),
    "thread__subject_token_only.eml": Mail('ann@example.com', 'Ann', 'Re: [#1042] Refund', 'Reply text.'),
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_replay_fixture(name, load, adapter_factory, runtime, sink) -> None:
    raw = load(name)
    result = await adapter_factory(runtime).ingest_raw(raw, sink)
    expected = EXPECTED[name]
    if expected == IGNORED:
        assert sink.items == [] and result.ignored
        return
    if expected == BOUNCE:
        assert sink.items and all(isinstance(i, ChannelEvent) for i in sink.items) and result.bounce
        return
    if expected == UNROUTABLE:  # kept for an admin with its raw source, never refused or dropped
        [event] = sink.items
        assert isinstance(event, ChannelEvent) and event.kind == ChannelEventKind.UNROUTABLE
        assert runtime.storage.files[event.data["raw_storage_key"]][0] == raw
        return
    assert isinstance(expected, Mail)
    [msg] = sink.items
    assert isinstance(msg, InboundMessage)
    assert (msg.sender_id, msg.profile.name, msg.payload["subject"]) == expected[:3]
    assert msg.profile.email == expected.address
    body = msg.text or ""
    assert expected.excerpt in body
    for text in (body, msg.payload["subject"], msg.profile.name or ""):
        assert "\ufffd" not in text and "\x1b" not in text  # nothing garbled, no raw ISO-2022 escapes
