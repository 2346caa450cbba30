"""Export of the 错题本: NLU training examples (Rasa YAML) and FAQ rows (the import CSV format)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .models import KnowledgeCorrection, KnowledgeEntry
from .store import entry_from_row

FAQ_COLUMNS = ["id", "question", "answer", "similar", "category", "source", "valid_from", "valid_to"]


def export_nlu(items: Sequence[KnowledgeCorrection], path: Path) -> Tuple[int, int]:
    """Corrections that name an intent, as Rasa 3 NLU examples. Returns (written, skipped)."""
    named = [(c.query, c.intent) for c in items if c.intent]
    return write_nlu_examples(named, path), len(items) - len(named)


def write_nlu_examples(examples: Iterable[Tuple[str, str]], path: Path) -> int:
    """(text, intent) pairs as a Rasa 3 NLU file, one line each, repeats dropped; how many written."""
    by_intent: Dict[str, List[str]] = {}
    for query, intent in examples:
        texts = by_intent.setdefault(intent, [])
        text = " ".join(query.split())
        if text and text not in texts:
            texts.append(text)
    lines = ['version: "3.1"', "nlu:"]
    for intent in sorted(by_intent):
        lines += [f"- intent: {intent}", "  examples: |"]
        lines += [f"    - {q}" for q in by_intent[intent]]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return sum(len(v) for v in by_intent.values())


def export_faq(session: Session, items: Sequence[KnowledgeCorrection], path: Path) -> int:
    """One row per entry a correction touched, with the corrected questions among its 相似问, so the
    shop can merge them into its own sheet (re-importing the rows is idempotent)."""
    ids: List[str] = []
    extra: Dict[str, List[str]] = {}
    for c in items:
        entry_id = c.right_entry_id or c.created_entry_id
        if entry_id and entry_id not in ids:
            ids.append(entry_id)
        if c.right_entry_id:
            extra.setdefault(c.right_entry_id, []).append(c.query)
    rows = (
        {r.id: r for r in session.execute(sa.select(KnowledgeEntry).where(KnowledgeEntry.id.in_(ids))).scalars()}
        if ids else {}
    )
    written = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(FAQ_COLUMNS)
        for entry_id in ids:
            row = rows.get(entry_id)
            if row is None:
                continue  # entry deleted since; its correction stays in the 错题本
            e = entry_from_row(row, extra.get(entry_id, ()))
            writer.writerow([e.id, e.question, e.answer, "|".join(e.similar), e.category, e.source,
                             e.valid_from.isoformat(sep=" ") if e.valid_from else "",
                             e.valid_to.isoformat(sep=" ") if e.valid_to else ""])
            written += 1
    return written
