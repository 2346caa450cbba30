"""The nudges' part of the scheduler process (community_sop/scheduler.py leads; this rides along as
a companion): every round it acts on new events and decides the nudges that fell due; on the
clock it recomputes segments and health (daily, 04:00 shop time), schedules daily rules over their
audience (silent-customer recall at the rule's time), and looks for stalled parcels and new
微信客服 contacts in the shop's own data.

Daily jobs remember their last run (NudgeState), so a leader that starts late, or takes over from
one that died, runs what today still lacks and never runs it twice.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Dict, Optional

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from actions import templates
from bot.settings import get_settings
from channels.wechat import db
from nudges import events, scheduling, sending
from nudges.models import LIVE, NudgeRule, NudgeState, now_utc
from nudges.sending import day_and_week

logger = logging.getLogger("nudges.runner")
SEGMENTS_AT = "04:00"
SCAN_EVERY_MIN = 10
# a round works events and due nudges for at most this long, so the SOP's own work is not starved
ROUND_BUDGET_S = 5.0


class NudgeJobs:
    def __init__(self, runtime=None) -> None:
        self.runtime = runtime
        self.tz = get_settings().shop.timezone
        self.scheduler = None
        # rule id -> the daily_at its job was made for
        self.daily: Dict[int, str] = {}

    async def on_lead(self, scheduler) -> None:
        """Jobs on the leader's APScheduler, and today's daily work if it has not run yet."""
        self.scheduler = scheduler
        self.daily = {}
        hour, minute = SEGMENTS_AT.split(":")
        scheduler.add_job(self.recompute_segments, CronTrigger(hour=int(hour), minute=int(minute), timezone=self.tz),
                          id="nudges-segments", replace_existing=True, name="nudges segments")
        scheduler.add_job(self.scan, IntervalTrigger(minutes=SCAN_EVERY_MIN, timezone=self.tz),
                          id="nudges-scan", replace_existing=True, name="nudges scans")
        await self.sync_daily_rules()
        await self.catch_up()

    async def tick(self) -> bool:
        """One round: new contacts, new events, due nudges, within ROUND_BUDGET_S; whether work is
        left (the leader then starts the next round at once)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await events.scan_new_contacts()
        left = False
        while await scheduling.process_events() == scheduling.BATCH:
            if loop.time() - started >= ROUND_BUDGET_S:
                left = True
                break
        while not left:
            counts = await sending.send_due(runtime=self.runtime, limit=sending.ROUND)
            if sum(counts.values()) < sending.ROUND:
                break
            left = loop.time() - started >= ROUND_BUDGET_S
        await self.sync_daily_rules()
        return left

    # --- daily work ---------------------------------------------------------------------------------
    async def _ran_today(self, name: str) -> bool:
        today, _ = day_and_week(now_utc(), self.tz)
        async with db.session() as s:
            row = await s.get(NudgeState, name)
        return bool(row and (row.value or {}).get("day") == today.isoformat())

    async def _mark(self, name: str, extra: Optional[dict] = None) -> None:
        today, _ = day_and_week(now_utc(), self.tz)
        value = {"day": today.isoformat(), "at": now_utc().isoformat() + "Z", **(extra or {})}
        async with db.transaction() as s:
            row = await s.get(NudgeState, name)
            if row is None:
                s.add(NudgeState(name=name, value=value, updated_at=now_utc()))
            else:
                row.value, row.updated_at = value, now_utc()

    async def recompute_segments(self) -> None:
        from nudges import segments

        if await self._ran_today("segments_day"):
            return
        try:
            summary = await segments.recompute()
        except Exception:  # noqa: BLE001 - tomorrow's run (or the next leader) tries again
            logger.exception("segment recompute failed")
            return
        await self._mark("segments_day", {"customers": summary.get("customers")})

    async def run_daily_rule(self, rule_id: int) -> None:
        name = f"daily:{rule_id}"
        if await self._ran_today(name):
            return
        try:
            count = await scheduling.schedule_audience(rule_id)
        except Exception:  # noqa: BLE001
            logger.exception("daily nudge rule failed", extra={"rule_id": rule_id})
            return
        await self._mark(name, {"scheduled": count})
        logger.info("daily nudge rule ran", extra={"rule_id": rule_id, "scheduled": count})

    async def scan(self) -> None:
        try:
            await events.scan_stalled_parcels()
        except Exception:  # noqa: BLE001
            logger.exception("stalled-parcel scan failed")

    async def sync_daily_rules(self) -> None:
        """One cron job per live daily rule, at its time in the shop's zone."""
        if self.scheduler is None:
            return
        async with db.session() as s:
            rows = (await s.execute(sa.select(NudgeRule).where(NudgeRule.status == LIVE,
                                                               NudgeRule.deleted_at.is_(None)))).scalars().all()
        wanted = {}
        for row in rows:
            at = ((row.definition or {}).get("trigger") or {}).get("daily_at")
            if at:
                wanted[row.id] = at
        for rule_id in list(self.daily):
            if rule_id not in wanted:
                self.daily.pop(rule_id)
                try:
                    self.scheduler.remove_job(f"nudge-daily-{rule_id}")
                except Exception:  # noqa: BLE001 - already gone
                    pass
        for rule_id, at in wanted.items():
            if self.daily.get(rule_id) == at:
                continue
            hour, minute = at.split(":")
            self.scheduler.add_job(self.run_daily_rule, CronTrigger(hour=int(hour), minute=int(minute),
                                                                    timezone=self.tz),
                                   args=[rule_id], id=f"nudge-daily-{rule_id}", replace_existing=True,
                                   name=f"nudge daily rule {rule_id}")
            self.daily[rule_id] = at

    async def catch_up(self) -> None:
        """Today's segment recompute and daily rules whose time has passed, if nobody ran them."""
        local_now = templates.local(now_utc(), self.tz)
        if not await self._ran_today("segments_day"):
            await self.recompute_segments()
        for rule_id, at in self.daily.items():
            hour, minute = (int(x) for x in at.split(":"))
            if (local_now.hour, local_now.minute) >= (hour, minute):
                await self.run_daily_rule(rule_id)
        await self.scan()

