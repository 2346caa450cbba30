"""The kf/sync_msg cursor per 微信客服 account, in the database. It is saved in the transaction that
stores the page's messages in the inbox: a crash repeats the page (the inbox drops the repeats), it
never skips one."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from channels.wechat import db
from channels.wechat.models import KfCursor, now_utc


async def load(open_kfid: str) -> str:
    async with db.session() as s:
        row = await s.get(KfCursor, open_kfid)
        return row.cursor if row else ""


async def save_in(s: AsyncSession, open_kfid: str, cursor: str) -> None:
    """Upsert the cursor in the caller's transaction (committed with the page's messages)."""
    now = now_utc()
    await s.execute(db.insert(s, KfCursor).values(open_kfid=open_kfid, cursor=cursor, updated_at=now)
                    .on_conflict_do_update(index_elements=["open_kfid"], set_={"cursor": cursor, "updated_at": now}))
