"""Database access of the WeChat gateway: SQLAlchemy async sessions on the product's engine
(actions/db/engine.py: asyncpg on PostgreSQL, aiosqlite on SQLite), one transaction per unit of
work. Exactly-once comes from unique keys and conditional UPDATEs (a row changes state only from
the state the caller saw), so it holds across processes sharing the database.

Never hold a transaction across a platform API call or a turn of Rasa.
"""
from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import async_session

session = async_session


@contextlib.asynccontextmanager
async def transaction() -> AsyncIterator[AsyncSession]:
    """A session in a transaction: committed when the block ends, rolled back if it raises."""
    async with async_session() as s:
        async with s.begin():
            yield s


def insert(s: AsyncSession, model: Any) -> Any:
    """The INSERT of the session's dialect, which offers ON CONFLICT (PostgreSQL and SQLite write
    it alike; SQLAlchemy has one construct per dialect)."""
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(model)
