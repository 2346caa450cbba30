"""Managed-mode storage: FAQ entries, document passages and the 错题本 (corrections) in the shop's
database, on the shared declarative Base (migration: actions/db/migrations/versions/0002_knowledge.py).

The index is built from these tables into a folder; the database is the source of truth, the index a
derived artefact that can be rebuilt at any time.
"""
from __future__ import annotations

import sqlalchemy as sa

from actions.db.models import Base, utcnow

ORIGIN_CORRECTIONS = "corrections"


class KnowledgeEntry(Base):
    __tablename__ = "kb_entries"

    # the shop's own id from the sheet (or derived from the question); doc passages: "doc:<file>#<n>"
    id = sa.Column(sa.String(128), primary_key=True)
    kind = sa.Column(sa.String(8), nullable=False, default="faq")
    question = sa.Column(sa.Text, nullable=False)
    answer = sa.Column(sa.Text, nullable=False)
    # 相似问, in the order the shop wrote them
    similar = sa.Column(sa.JSON, nullable=False, default=list)
    category = sa.Column(sa.String(64), nullable=False, default="")
    source = sa.Column(sa.String(256), nullable=False, default="")
    heading = sa.Column(sa.String(256), nullable=False, default="")
    # shop-local naive times; NULL = unbounded
    valid_from = sa.Column(sa.DateTime)
    valid_to = sa.Column(sa.DateTime)
    # the file it was imported from, or "corrections" for answers written in the 错题本
    origin = sa.Column(sa.String(256), nullable=False, default="", index=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow)


class KnowledgeCorrection(Base):
    """错题本: a question the bot got wrong, and what it should have answered."""

    __tablename__ = "kb_corrections"
    __table_args__ = (
        sa.CheckConstraint("right_entry_id IS NOT NULL OR new_answer IS NOT NULL", name="right_or_new"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    query = sa.Column(sa.Text, nullable=False)
    # what the bot answered (None when it declined or clarified); plain ids, no foreign keys: entries
    # are replaced by re-imports and a correction must outlive them
    wrong_entry_id = sa.Column(sa.String(128))
    right_entry_id = sa.Column(sa.String(128), index=True)
    new_answer = sa.Column(sa.Text)
    # the entry created from new_answer
    created_entry_id = sa.Column(sa.String(128))
    # NLU intent the question belongs to, for exporting it as a training example
    intent = sa.Column(sa.String(64))
    conversation_id = sa.Column(sa.String(255), index=True)
    staff = sa.Column(sa.String(64), nullable=False, default="")
    note = sa.Column(sa.Text, nullable=False, default="")
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)
