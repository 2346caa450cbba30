"""Managed mode: import into the database, the 错题本, and building the index from the database.

Blocking SQLAlchemy sessions (the CLI and the importer run outside the event loop; the action server
calls these through ``asyncio.to_thread``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .entries import DOC, FAQ, Entry
from .models import ORIGIN_CORRECTIONS, KnowledgeCorrection, KnowledgeEntry

logger = logging.getLogger(__name__)


@dataclass
class ImportCounts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


def _to_row(entry: Entry, origin: str, row: Optional[KnowledgeEntry] = None) -> KnowledgeEntry:
    row = row or KnowledgeEntry(id=entry.id)
    row.kind = entry.kind
    row.question = entry.question
    row.answer = entry.answer
    row.similar = list(entry.similar)
    row.category = entry.category
    row.source = entry.source
    row.heading = entry.heading
    row.valid_from = entry.valid_from
    row.valid_to = entry.valid_to
    row.origin = origin
    return row


def entry_from_row(row: KnowledgeEntry, extra_similar: Sequence[str] = ()) -> Entry:
    similar = list(row.similar or [])
    for q in extra_similar:
        if q not in similar and q != row.question:
            similar.append(q)
    return Entry(id=row.id, question=row.question, answer=row.answer, similar=tuple(similar),
                 category=row.category or "", source=row.source or "", valid_from=row.valid_from,
                 valid_to=row.valid_to, kind=row.kind or FAQ, heading=row.heading or "")


def upsert_entries(session: Session, entries: Iterable[Entry], origin: str) -> ImportCounts:
    """Insert or replace by id: importing the same sheet twice changes nothing."""
    counts = ImportCounts()
    entries = list({e.id: e for e in entries}.values())
    existing = {r.id: r for r in session.execute(
        sa.select(KnowledgeEntry).where(KnowledgeEntry.id.in_([e.id for e in entries]))).scalars()} if entries else {}
    for entry in entries:
        row = existing.get(entry.id)
        if row is None:
            session.add(_to_row(entry, origin))
            counts.inserted += 1
        else:
            _to_row(entry, origin, row)
            counts.updated += 1
    return counts


def replace_documents(session: Session, entries: Iterable[Entry], origin: str) -> ImportCounts:
    """Passages of a re-imported document replace all its old passages (a shorter document must
    not leave stale passages behind)."""
    entries = list(entries)
    prefixes = {e.id.split("#", 1)[0] + "#" for e in entries if e.kind == DOC}
    counts = ImportCounts()
    for prefix in prefixes:
        result = session.execute(sa.delete(KnowledgeEntry).where(KnowledgeEntry.id.startswith(prefix, autoescape=True))
                                 .execution_options(synchronize_session=False))
        counts.deleted += result.rowcount or 0
    session.flush()
    for entry in entries:
        session.add(_to_row(entry, origin))
        counts.inserted += 1
    return counts


def prune_faq(session: Session, keep_ids: Iterable[str]) -> int:
    """Delete imported FAQ entries missing from the sheet (never those written in the 错题本)."""
    keep = set(keep_ids)
    stale = [r.id for r in session.execute(sa.select(KnowledgeEntry.id).where(
        KnowledgeEntry.kind == FAQ, KnowledgeEntry.origin != ORIGIN_CORRECTIONS)) if r.id not in keep]
    for chunk in range(0, len(stale), 500):
        session.execute(sa.delete(KnowledgeEntry).where(KnowledgeEntry.id.in_(stale[chunk:chunk + 500]))
                        .execution_options(synchronize_session=False))
    return len(stale)


def add_correction(session: Session, query: str, *, right_entry_id: Optional[str] = None,
                   new_answer: Optional[str] = None, new_question: Optional[str] = None,
                   wrong_entry_id: Optional[str] = None, intent: Optional[str] = None,
                   conversation_id: Optional[str] = None, staff: str = "", note: str = "",
                   category: str = "") -> KnowledgeCorrection:
    """Record that ``query`` was misunderstood. Either name the entry that should have answered
    (the query becomes one of its 相似问) or write a new answer (a new entry is created). Both take
    effect on the next index build."""
    query = (query or "").strip()
    if not query:
        raise ValueError("the misunderstood question is empty")
    if (right_entry_id is None) == (new_answer is None):
        raise ValueError("give either the right entry id or a new answer")
    if right_entry_id is not None and session.get(KnowledgeEntry, right_entry_id) is None:
        raise ValueError(f"no knowledge entry {right_entry_id!r}")
    correction = KnowledgeCorrection(query=query, wrong_entry_id=wrong_entry_id, right_entry_id=right_entry_id,
                                     new_answer=new_answer, intent=intent, conversation_id=conversation_id,
                                     staff=staff, note=note)
    session.add(correction)
    session.flush()  # the id names the new entry
    if new_answer is not None:
        entry_id = f"corr-{correction.id}"
        question = (new_question or query).strip()
        similar = [query] if question != query else []
        session.add(KnowledgeEntry(id=entry_id, kind=FAQ, question=question, answer=new_answer.strip(),
                                   similar=similar, category=category, source=f"错题本 #{correction.id}",
                                   heading="", origin=ORIGIN_CORRECTIONS))
        correction.created_entry_id = entry_id
    return correction


def corrections(session: Session, since=None) -> List[KnowledgeCorrection]:
    stmt = sa.select(KnowledgeCorrection).order_by(KnowledgeCorrection.id)
    if since is not None:
        stmt = stmt.where(KnowledgeCorrection.created_at >= since)
    return list(session.execute(stmt).scalars())


def entries_for_index(session: Session) -> List[Entry]:
    """Every stored entry, with the questions of the 错题本 added as 相似问 of their right entries.

    Applied here rather than written into the entry, so re-importing the shop's sheet (which replaces
    the 相似问 column) cannot lose a correction.
    """
    extra: Dict[str, List[str]] = {}
    for c in corrections(session):
        if c.right_entry_id:
            extra.setdefault(c.right_entry_id, []).append(c.query)
    rows = session.execute(sa.select(KnowledgeEntry).order_by(KnowledgeEntry.id)).scalars()
    return [entry_from_row(r, extra.get(r.id, ())) for r in rows]
