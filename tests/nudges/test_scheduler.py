"""The nudges ride on the real scheduler (SQLite and PostgreSQL): its leader, with APScheduler, acts on
posted events and sends what falls due through the outbox to the WeChat sandbox; on taking the
lead it recomputes today's segments once and looks for stalled parcels."""
from __future__ import annotations

import asyncio

import sqlalchemy as sa

from actions.db.engine import async_session
from community_sop.scheduler import SopScheduler
from nudges import events
from nudges.models import NudgeState
from nudges.runner import NudgeJobs
from tests.nudges.conftest import add_customer, event, install_rules, log_of, text_of
from tests.nudges.test_cart_rule import CART, treated


async def test_the_leader_acts_on_events_and_sends_what_falls_due(harness):
    h = harness
    [number] = treated("C40")
    await add_customer(number, "wmLive")
    await install_rules(["cart_abandonment", "refund_completed"])
    await h.say("kf", "wmLive", "在吗")
    await h.quiet()
    before = len(h.deliveries("kf", "wmLive"))
    scheduler = SopScheduler(runtime=h.runtime, companions=[NudgeJobs(h.runtime)])
    scheduler.poll_s = 0.2
    task = asyncio.create_task(scheduler.run())
    try:
        await h.wait_for(scheduler.leading.is_set, timeout=30)
        async with async_session() as s:
            state = await s.get(NudgeState, "segments_day")
        assert state is not None and state.value["day"]          # today's recompute ran on taking the lead
        await events.ingest({"events": [event("s1", "checkout_started", number, "CART-S", 31, **CART),
                                        event("s2", "refund_completed", number, "SY-S", 0, amount=20)]})
        await h.wait_for(lambda: len(h.deliveries("kf", "wmLive")) >= before + 1, timeout=30)
        # the refund (a service message) goes first; the cart reminder is marketing, outranked
        await h.wait_for(lambda: log_of(number), timeout=10)

        async def decided():
            log = await log_of(number)
            return [e for e in log if e["status"] != "scheduled"]
        found = await h.wait_for(decided, timeout=30)
        assert ("refund_completed", "sent") in [(e["rule"], e["status"]) for e in found]
    finally:
        scheduler.stop()
        await asyncio.wait_for(task, 30)
    assert "¥20" in "".join(text_of(d) for d in h.deliveries("kf", "wmLive"))
    async with async_session() as s:
        assert (await s.execute(sa.select(sa.func.count()).select_from(NudgeState))).scalar() >= 1
