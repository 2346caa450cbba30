"""Database access of the gateway: async SQLAlchemy sessions on the shop's database, one ordinary
transaction per unit of work. Exactly-once comes from unique keys and conditional UPDATEs (a row
changes state only from the state the caller saw), so it holds across processes sharing the
database. Transactions queue for SQLite's single writer (actions.db.engine.transaction).

Never hold a transaction across a platform API call or a turn of Rasa.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import async_session, transaction

session = async_session
__all__ = ["session", "transaction", "insert"]


def insert(s: AsyncSession, model: Any) -> Any:
    """The INSERT of the session's dialect, which offers ON CONFLICT (PostgreSQL and SQLite write
    it alike; SQLAlchemy has one construct per dialect)."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(model)
