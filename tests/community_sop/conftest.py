"""SOP fixtures: the WeChat sandbox and the gateway's runtime in this process (tests/wechat), on
SQLite and PostgreSQL, with groups known to both."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import List, Optional

from actions.db.engine import async_session
from channels.wechat.models import WeChatGroup
from tests.wechat.conftest import harness, no_redis, postgres_db, sqlite_db, wechat_db  # noqa: F401


async def add_groups(h, specs: List[dict]) -> None:
    """Groups in the sandbox and in the product: {"chat_id", "tags", "owner", "robot", "created"}."""
    async with async_session() as s:
        for spec in specs:
            owner = spec.get("owner", "owner01")
            group = h.platform.add_group(spec["chat_id"], spec.get("name", f"群{spec['chat_id']}"), owner,
                                         robot=spec.get("robot", True))
            s.add(WeChatGroup(chat_id=spec["chat_id"], name=group.name, owner_userid=owner, owner_name="运营小陈",
                              robot_key=group.robot_key, delivery_mode="robot", tags=spec.get("tags", []),
                              member_count=3, group_created_at=spec.get("created")))
        await s.commit()


def utc_minute(offset_s: float = 0, now: Optional[datetime] = None) -> datetime:
    now = now or datetime.utcnow()
    return (now + timedelta(seconds=offset_s)).replace(second=0, microsecond=0)
