"""The audit log: security decisions (verification locks, and who lifted them) as append-only rows
staff can read, each also written as a log line."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Dict, List, Optional

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import AuditEvent, utcnow

logger = logging.getLogger("actions.audit")


def record(session: AsyncSession, actor: str, action: str, subject: str, detail: Optional[Dict[str, Any]] = None,
           at: Optional[datetime] = None, level: int = logging.WARNING) -> AuditEvent:
    """Add an audit row to the caller's transaction (committed with the decision it records). The
    log line is a warning for security decisions; routine staff steps pass level=logging.INFO."""
    event = AuditEvent(at=at or utcnow(), actor=actor[:128], action=action[:64], subject=subject[:160],
                       detail=detail or {})
    session.add(event)
    logger.log(level, "audit: %s", action, extra={"actor": actor, "subject": subject, "detail": detail or {}})
    return event


async def recent(session: AsyncSession, action: Optional[str] = None, subject: Optional[str] = None,
                 limit: int = 50) -> List[AuditEvent]:
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if subject:
        stmt = stmt.where(AuditEvent.subject == subject)
    return list((await session.execute(stmt)).scalars())
