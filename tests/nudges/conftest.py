"""Nudges fixtures: the WeChat tests' migrated databases (SQLite and PostgreSQL) and sandbox harness."""
from __future__ import annotations

import pytest

from tests.conftest import _use_shop_file, write_shop_file
from tests.wechat.conftest import harness, no_redis, postgres_db, sqlite_db, wechat_db  # noqa: F401

QUIET_OFF = {"quiet_start": "00:00", "quiet_end": "00:00"}


@pytest.fixture(autouse=True)
def no_quiet_hours(tmp_path):
    """Quiet hours off (start = end), so a test does not depend on the hour it runs at; the tests of
    quiet hours pass their own `now`."""
    yield from _use_shop_file(write_shop_file(tmp_path, nudges=QUIET_OFF))


class NudgeSettings:
    """Change the shop's nudge settings for the rest of a test: `nudge_settings.set(caps=...)`."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path, self.active = tmp_path, None

    def set(self, **changes) -> None:
        self.close()
        folder = self.tmp_path / f"shop-{id(changes)}"
        folder.mkdir()
        self.active = _use_shop_file(write_shop_file(folder, nudges={**QUIET_OFF, **changes}))
        next(self.active)

    def close(self) -> None:
        if self.active is not None:
            next(self.active, None)
            self.active = None


@pytest.fixture
def nudge_settings(tmp_path, no_quiet_hours):
    settings = NudgeSettings(tmp_path)
    yield settings
    settings.close()


# --- the shop side of nudge tests ----------------------------------------------------------------------
from datetime import datetime, timedelta, timezone  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

import sqlalchemy as sa  # noqa: E402

from actions.db.engine import async_session, in_transaction  # noqa: E402
from actions.db.models import Customer, CustomerIdentity  # noqa: E402


async def add_customer(number: str, kf_user: Optional[str] = None, **fields) -> int:
    """A customer of the shop, known on 微信客服 as `kf_user` when given."""
    async def work(s):
        customer = Customer(external_id=number, name=fields.pop("name", "王小姐"), **fields)
        s.add(customer)
        await s.flush()
        if kf_user:
            s.add(CustomerIdentity(customer_id=customer.id, channel="wecom_kf", external_id=kf_user))
        return customer.id
    return await in_transaction(work)


async def install_rules(keys: Optional[List[str]] = None, **changes) -> None:
    """The shipped rules (only `keys` when given), live; `changes` replace parts of a rule by key."""
    from nudges import rules
    from nudges.models import LIVE

    async def work(s):
        for data in rules.shipped():
            if keys is not None and data["key"] not in keys:
                continue
            data = {**data, **changes.get(data["key"], {})}
            await rules.create(s, data, "lead", status=LIVE)
    await in_transaction(work)


def iso(minutes_ago: float = 0, now: Optional[datetime] = None) -> str:
    at = (now or datetime.now(timezone.utc)) - timedelta(minutes=minutes_ago)
    return at.isoformat(timespec="seconds")


def event(event_id: str, kind: str, customer: str, ref: str, minutes_ago: float = 0, **data) -> Dict:
    return {"id": event_id, "type": kind, "customer": customer, "ref": ref, "at": iso(minutes_ago), **data}


async def log_of(number: str) -> List[Dict]:
    from nudges.models import NudgeLogEntry

    async with async_session() as s:
        cid = (await s.execute(sa.select(Customer.id).where(Customer.external_id == number))).scalar()
        rows = (await s.execute(sa.select(NudgeLogEntry).where(NudgeLogEntry.customer_id == cid)
                                .order_by(NudgeLogEntry.id))).scalars().all()
    return [{"rule": r.rule_key, "status": r.status, "reason": r.reason, "detail": r.detail} for r in rows]


def text_of(delivery: Dict) -> str:
    """What a customer reads in a delivered message: a text's content, a menu message's head and items."""
    content = delivery["content"]
    if "head_content" in content:
        items = " ".join(f"[{i['click']['content']}]" for i in content.get("list", []) if i.get("type") == "click")
        return f"{content['head_content']} {items}".strip()
    return content.get("content", "")
