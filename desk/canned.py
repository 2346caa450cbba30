"""Canned replies staff pick in the reply box (variables {customer}, {agent}, {shop} are filled in
by the page). The demo shop gets a few; shops add their own from the console (supervisors)."""
from __future__ import annotations

from typing import List

import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from bot.settings import REPO_ROOT
from desk.models import CannedReply

DEMO_FILE = REPO_ROOT / "actions" / "db" / "demo" / "canned_replies.yml"


async def ensure_demo_canned(session: AsyncSession) -> List[str]:
    made = []
    for item in yaml.safe_load(DEMO_FILE.read_text(encoding="utf-8")):
        title, text = item["title"], item["text"]
        exists = (await session.execute(sa.select(CannedReply.id).where(CannedReply.title == title))).first()
        if exists is None:
            session.add(CannedReply(title=title, text=text, created_by="system:demo"))
            made.append(title)
    return made
