"""Speed parts of the FAQ benchmark: index build and per-question latency at 1k / 10k entries, with and
without the re-ranker, and the application's start-up / refresh of a stored knowledge base (a real SQLite
database, embeddings stored with the entries)."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

from faq_eval import grown_kb, load_set, shipped_config

from bot_flows.matcher import FaqEntry, FaqMatcher


def latencies(m: FaqMatcher, texts: list[str]) -> dict[str, float]:
    """p50 / p99 in ms of a whole question (its embedding, then the match), and of the match alone (what
    the event loop runs once the embedding was made in a worker thread)."""
    whole, loop, cpu = [], [], []
    for text in texts:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        m.prepare(text)
        t1 = time.perf_counter()
        m.match(text)
        t2 = time.perf_counter()
        cpu.append((time.thread_time() - c0) * 1000)
        whole.append((t2 - t0) * 1000)
        loop.append((t2 - t1) * 1000)
    for xs in (whole, loop, cpu):
        xs.sort()
    p99 = int(0.99 * (len(whole) - 1))
    # CPU time is what the code costs; wall time also counts waiting for a core on a busy machine.
    return {"p50_ms": statistics.median(whole), "p99_ms": whole[p99], "loop_p99_ms": loop[p99],
            "cpu_p50_ms": statistics.median(cpu), "cpu_p99_ms": cpu[p99]}


def speed(eval_dir: Path, size: int, texts: list[str], reranker: Any = None, memory: bool = False) -> dict[str, float]:
    """Build time (from stored embeddings when re-ranking), latencies and optionally peak memory at a KB size."""
    base, _ = load_set(eval_dir, "bq_dev")
    kb = grown_kb(eval_dir, base, size)
    out: dict[str, float] = {}
    if reranker is not None:  # the first start encodes everything; later ones read the stored rows
        t0 = time.perf_counter()
        vectors = FaqMatcher(shipped_config(), reranker).embed_missing(kb)
        out["encode_s"] = time.perf_counter() - t0
        kb = [replace(e, vectors=vectors[e.id]) for e in kb]
    m = FaqMatcher(shipped_config(), reranker)
    t0, c0 = time.perf_counter(), time.process_time()
    m.build(kb)
    out["build_s"], out["build_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    if memory:  # a second build under tracemalloc (which slows allocation, so not timed)
        tracemalloc.start()
        FaqMatcher(shipped_config()).build(kb)
        out["peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    for text in texts[:20]:  # warm the caches a long-running process has warm
        m.match(text)
    out.update(latencies(m, texts))
    return out


def app_startup(eval_dir: Path, size: int, reranker: bool) -> dict[str, float]:
    """The application's FAQ index on a SQLite database of `size` entries, without and with the re-ranker:
    the first start (analyses / embeddings computed and stored), a restart (read as stored), and the
    refresh after one entry is edited.
    CPU times are the whole process's (the event loop and the worker threads)."""
    return asyncio.run(_app_startup(eval_dir, size, reranker))


async def _app_startup(eval_dir: Path, size: int, reranker: bool) -> dict[str, float]:
    from scrm.bootstrap import build_context
    from scrm.db.migrate import upgrade
    from scrm.services.bot import faq as faq_svc
    from scrm.services.uow import unit_of_work
    from scrm.settings import load_settings

    base, _ = load_set(eval_dir, "bq_dev")
    kb = grown_kb(eval_dir, base, size)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/faq.db"
        await upgrade(url)
        settings = load_settings(env={}, overrides={"database": {"url": url, "auto_migrate": False},
                                                     "storage": {"path": f"{tmp}/files"}})
        ctx = await build_context(settings)
        try:
            async with unit_of_work(ctx) as tx:
                await faq_svc.import_entries(tx, kb)
            cfg = shipped_config()
            runs = [("bm25_first_start", False), ("bm25_startup", False)]
            if reranker:
                runs += [("first_start", True), ("startup", True)]
            for label, rr in runs:
                index = faq_svc.FaqIndex(cfg, semantic_rerank=rr)
                t0, c0 = time.perf_counter(), time.process_time()
                await index.load(ctx)
                out[f"{label}_s"], out[f"{label}_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
            edited: FaqEntry = replace(kb[0], paraphrases=(*kb[0].paraphrases, "这是新加的一种问法"))
            async with unit_of_work(ctx) as tx:
                await faq_svc.import_entries(tx, [edited])
            t0, c0 = time.perf_counter(), time.process_time()
            await index.refresh(ctx, [edited.id])
            out["refresh_ms"], out["refresh_cpu_ms"] = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
            assert index.matcher.get(edited.id) == edited
        finally:
            await ctx.close()
    return out
