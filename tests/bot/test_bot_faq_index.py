"""The FAQ index keeps each entry's analysis with the entry: a restart reads it instead of running jieba
over the whole knowledge base, an edit recomputes that entry only, and a dictionary change all of them."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from bot_flows.matcher import FaqEntry, FaqMatcher
from scrm.db.models import FaqEntryRow
from scrm.services.bot import faq as faq_svc
from scrm.services.bot.faq import FaqIndex, matcher_config
from scrm.services.bot.rounds import load_bot_config
from scrm.services.uow import unit_of_work

KB = [FaqEntry(id="ship", question="多久发货", paraphrases=("什么时候发货", "多久发货？"), answer="48小时内发货"),
      FaqEntry(id="refund", question="How long does a refund take?", paraphrases=("When do I get my money back",),
               answer="3-5 days", language="en")]


def _count(index: FaqIndex, monkeypatch) -> list[str]:
    analyzed: list[str] = []
    original = index.matcher.analyze_entry

    def counting(entry: FaqEntry):
        analyzed.append(entry.id)
        return original(entry)

    monkeypatch.setattr(index.matcher, "analyze_entry", counting)
    return analyzed


async def test_a_restart_reads_stored_analyses_and_an_edit_recomputes_one_entry(ctx, monkeypatch, tmp_path):
    async with unit_of_work(ctx) as tx:
        await faq_svc.import_entries(tx, KB)
    cfg = matcher_config(load_bot_config())
    first = FaqIndex(cfg)
    analyzed = _count(first, monkeypatch)
    await first.load(ctx)
    assert sorted(analyzed) == ["refund", "ship"]

    restarted = FaqIndex(cfg)
    analyzed = _count(restarted, monkeypatch)
    await restarted.load(ctx)
    assert analyzed == []
    # the stored analysis indexes exactly as a fresh one (the repeated "多久发货？" is skipped in both)
    fresh = FaqMatcher(cfg)
    fresh.build(KB)
    for q in ("发货要多久", "when will I get my refund"):
        got, want = restarted.matcher.match(q), fresh.match(q)
        assert [(c.entry_id, round(c.score, 6)) for c in got.candidates] == \
            [(c.entry_id, round(c.score, 6)) for c in want.candidates]

    async with unit_of_work(ctx) as tx:
        await faq_svc.update_entry(tx, "ship", {"paraphrases": ["发货要几天"]})
    await restarted.refresh(ctx, ["ship"])
    assert analyzed == ["ship"] and restarted.matcher.match("发货要几天").decision == "answer"

    # other dictionaries: every stored analysis is stale
    userdict = tmp_path / "userdict.txt"
    userdict.write_text("要几天 100 v\n", encoding="utf-8")
    other = FaqIndex(replace(cfg, user_dict=str(userdict)))
    analyzed = _count(other, monkeypatch)
    await other.load(ctx)
    assert sorted(analyzed) == ["refund", "ship"]
    async with ctx.db.session() as s:
        keys = {r.key: r.analysis_key for r in (await s.scalars(select(FaqEntryRow))).all()}
    assert all(k and len(k) == 64 for k in keys.values())


def test_stored_analyses_that_do_not_fit_are_ignored():
    assert faq_svc.unpack_analyses(b"not zlib", 1) is None
    packed = faq_svc.pack_analyses(FaqMatcher().analyze_entry(KB[0]))
    assert faq_svc.unpack_analyses(packed, 3) is not None and faq_svc.unpack_analyses(packed, 2) is None


async def test_a_first_build_cancelled_half_way_is_built_again_for_whoever_waits(ctx, monkeypatch):
    """A request or consumer stopped during the process's first FAQ build (seeding the example knowledge
    base) must not leave the others waiting for the index forever: the bot would never answer again."""
    import asyncio

    async with unit_of_work(ctx) as tx:
        await faq_svc.import_entries(tx, KB)
    ctx.extras.pop(faq_svc._INDEX_KEY, None)  # noqa: SLF001 - a process that has not built it yet
    seeding, release = asyncio.Event(), asyncio.Event()
    original = faq_svc.seed_if_empty
    calls = 0

    async def slow_first_seed(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 1:
            seeding.set()
            await release.wait()  # cancelled here
        return await original(*args, **kwargs)

    monkeypatch.setattr(faq_svc, "seed_if_empty", slow_first_seed)
    first = asyncio.create_task(faq_svc.get_index(ctx))
    await asyncio.wait_for(seeding.wait(), 10)
    waiting = asyncio.create_task(faq_svc.get_index(ctx))
    await asyncio.sleep(0.05)
    first.cancel()
    index = await asyncio.wait_for(waiting, 30)
    assert ctx.extras[faq_svc._INDEX_KEY] is index  # noqa: SLF001
    assert index.matcher.match("什么时候发货").best is not None  # built for real, not the half-built one
    assert calls == 2
