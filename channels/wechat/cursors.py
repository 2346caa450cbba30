"""The kf/sync_msg cursor per 微信客服 account, in the database. It is saved only after the page's
messages are in the inbox: a crash in between repeats the page (the inbox drops the repeats), it
never skips one."""
from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from channels.wechat.db import session as async_session
from channels.wechat.models import KfCursor, now_utc


async def load(open_kfid: str) -> str:
    async with async_session() as session:
        row = await session.get(KfCursor, open_kfid)
        return row.cursor if row else ""


async def save(open_kfid: str, cursor: str) -> None:
    async with async_session() as session:
        row = await session.get(KfCursor, open_kfid)
        if row is None:
            session.add(KfCursor(open_kfid=open_kfid, cursor=cursor, updated_at=now_utc()))
        else:
            row.cursor, row.updated_at = cursor, now_utc()
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            row = await session.get(KfCursor, open_kfid)
            row.cursor, row.updated_at = cursor, now_utc()
            await session.commit()
