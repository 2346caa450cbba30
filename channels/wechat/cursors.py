"""The kf/sync_msg cursor per 微信客服 account, in the database. It is saved in the transaction that
stores the page's messages in the inbox: a crash repeats the page (the inbox drops the repeats), it
never skips one."""
from __future__ import annotations

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection

from channels.wechat.db import Precompiled, insert_for_dialect, session as async_session
from channels.wechat.models import KfCursor, now_utc


async def load(open_kfid: str) -> str:
    async with async_session() as session:
        row = await session.get(KfCursor, open_kfid)
        return row.cursor if row else ""


# compiled once per dialect: it runs with every 微信客服 page
_SAVE = Precompiled(lambda dialect: insert_for_dialect(dialect, KfCursor).values(
    open_kfid=bindparam("kfid"), cursor=bindparam("cur"), updated_at=bindparam("at")).on_conflict_do_update(
        index_elements=["open_kfid"], set_={"cursor": bindparam("cur"), "updated_at": bindparam("at")}))


def save_in(conn: Connection, open_kfid: str, cursor: str) -> None:
    """Upsert the cursor in the caller's transaction (committed with the page's messages; sent with
    the transaction's next statement)."""
    _SAVE.defer(conn, {"kfid": open_kfid, "cur": cursor, "at": now_utc()})
