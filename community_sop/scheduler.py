"""The SOP scheduler process (`python -m community_sop.scheduler`, started by `./siyu run`).

Any number may run; one leads. The leader holds a lock (PostgreSQL: an advisory lock on its own
connection; SQLite: a file lock beside the database) and runs APScheduler 3.9 with an in-memory job
store whose jobs are derived from the plans (one per plan, rebuilt when a plan changes): job stores
are never shared between schedulers. A firing hands each group's post to the outbox under a unique
run key (community_sop/firing.py), so the lock saves work and the key keeps posts single.

On taking the lead it catches up: due times since the last leader was seen (at most a day back)
are fired; firing sends those less than the grace period late and records the others as skipped.
It also settles the execution log from the outbox and follows mass sends until the owner confirms
(one reminder after REMIND_AFTER). Other domains' jobs ride on the same leader as companions: the
process started by `./siyu run` leads the nudges too (nudges/runner.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import sqlalchemy as sa
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from bot.settings import Settings, get_settings
from channels.wechat import db
from channels.wechat.models import MassSendTask
from channels.wechat.outbound.worker import worker_name
from community_sop import firing, runlog, schedule as rules
from community_sop.models import SopPlan, SopSchedulerState, now_utc

logger = logging.getLogger("community_sop.scheduler")
LOCK_KEY = 0x5159_0501  # the advisory lock's key: "the SOP scheduler" on this database
ACQUIRE_EVERY_S = 5.0
HEARTBEAT_EVERY_S = 5.0
MASS_CHECK_EVERY_S = 60.0
REMIND_AFTER = timedelta(minutes=30)
CATCH_UP_AT_MOST = timedelta(days=1)
# jobs that run within this window are fired together
BATCH_WINDOW_S = 0.2


class Leadership:
    """Who leads: acquire() without waiting; held() checks the lock is still ours."""

    async def acquire(self) -> bool:
        raise NotImplementedError

    async def held(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class PostgresLeadership(Leadership):
    """pg_try_advisory_lock on a dedicated, unpooled connection: the lock ends with the connection,
    so a leader that dies (or loses the database) frees it at once."""

    def __init__(self, settings: Settings) -> None:
        self.engine = create_async_engine(settings.async_database_url, poolclass=NullPool,
                                          connect_args={"timeout": 10, "command_timeout": 10})
        self.conn: Optional[AsyncConnection] = None

    async def acquire(self) -> bool:
        try:
            if self.conn is None:
                self.conn = await self.engine.connect()
            got = (await self.conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY})).scalar()
            await self.conn.commit()
            return bool(got)
        except Exception as exc:  # noqa: BLE001 - the database may be away: try again later
            logger.warning("sop leader lock unavailable", extra={"error": str(exc)[:200]})
            await self._drop()
            return False

    async def held(self) -> bool:
        if self.conn is None:
            return False
        try:
            await asyncio.wait_for(self.conn.execute(sa.text("SELECT 1")), 10)
            await self.conn.commit()
            return True
        except Exception:  # noqa: BLE001 - the connection (and with it the lock) is gone
            await self._drop()
            return False

    async def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
        self.conn = None

    async def release(self) -> None:
        await self._drop()
        await self.engine.dispose()


class FileLeadership(Leadership):
    """flock on a file beside the SQLite database (SQLite is one machine's: so are its schedulers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = None

    async def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self.handle = handle
        return True

    async def release(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def leadership_for(settings: Settings) -> Leadership:
    if settings.is_sqlite:
        database = settings.sync_database_url.split("///", 1)[-1]
        return FileLeadership(Path(database + ".sop-scheduler.lock"))
    return PostgresLeadership(settings)


class SopScheduler:
    def __init__(self, settings: Optional[Settings] = None, runtime=None, leadership: Optional[Leadership] = None,
                 client=None, companions: Sequence = ()) -> None:
        """`companions`: other domains' jobs led by the same leader (nudges/runner.py): each has
        `on_lead(apscheduler)` and `tick()`, called every round; a tick that returns True has work
        left, and the next round starts at once instead of after the poll interval."""
        from channels.wechat.outbound.sender import OutboxOnly

        self.settings = settings or get_settings()
        self.tz = self.settings.shop.timezone
        self.grace = timedelta(minutes=self.settings.sop_grace_minutes)
        self.poll_s = self.settings.sop_poll_s
        self.runtime = runtime or OutboxOnly()
        self.leadership = leadership or leadership_for(self.settings)
        self.client = client
        self.name = worker_name()
        self.scheduler: Optional[AsyncIOScheduler] = None
        # plan id -> the updated_at its job was made from
        self.jobs: Dict[int, datetime] = {}
        self.leading = asyncio.Event()
        self.stopping = asyncio.Event()
        # due times waiting to be fired by the batch in progress
        self.firings: Dict[Tuple[int, datetime], asyncio.Future] = {}
        self._drain: Optional[asyncio.Task] = None
        # plan id -> its trigger (what a job asks when it runs)
        self.triggers: Dict[int, object] = {}
        self.companions = list(companions)

    # --- leading ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Until stop(): wait for the lead, lead while the lock holds."""
        try:
            while not self.stopping.is_set():
                if await self.leadership.acquire():
                    logger.info("sop scheduler leads", extra={"scheduler": self.name})
                    try:
                        await self._lead()
                    finally:
                        self._stop_scheduler()
                        self.leading.clear()
                    if not self.stopping.is_set():
                        logger.warning("sop scheduler lost the lead", extra={"scheduler": self.name})
                        await self.leadership.release()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), ACQUIRE_EVERY_S)
        finally:
            await self._wait_firings()
            await self.leadership.release()

    def stop(self) -> None:
        self.stopping.set()

    async def _lead(self) -> None:
        self.scheduler = AsyncIOScheduler(timezone=self.tz, job_defaults={
            "misfire_grace_time": max(1, int(self.grace.total_seconds())), "coalesce": True, "max_instances": 1})
        self.scheduler.start()
        self.jobs = {}
        last_seen = await self._heartbeat(took_over=True)
        await self.sync_jobs()
        await self.catch_up(last_seen)
        for companion in self.companions:
            try:
                await companion.on_lead(self.scheduler)
            except Exception:  # noqa: BLE001 - its next round tries again; the SOP goes on
                logger.exception("scheduler companion failed to start", extra={"companion": type(companion).__name__})
        self.leading.set()
        beat = mass = asyncio.get_running_loop().time()
        busy = False
        while not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0 if busy else self.poll_s)
            busy = False
            if self.stopping.is_set() or not await self.leadership.held():
                return
            try:
                await self.sync_jobs()
                await runlog.settle()
                for companion in self.companions:
                    try:
                        busy = bool(await companion.tick()) or busy
                    except Exception:  # noqa: BLE001 - one domain's failure must not stop the others
                        logger.exception("scheduler companion round failed",
                                         extra={"companion": type(companion).__name__})
                now = asyncio.get_running_loop().time()
                if now - beat >= HEARTBEAT_EVERY_S:
                    await self._heartbeat()
                    beat = now
                if self.client is not None and now - mass >= MASS_CHECK_EVERY_S:
                    await self.follow_mass_sends()
                    mass = now
            except Exception:  # noqa: BLE001 - a database hiccup must not end the lead
                logger.exception("sop scheduler round failed")

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.scheduler = None

    async def _heartbeat(self, took_over: bool = False) -> Optional[datetime]:
        """Record that this leader is alive; the previous leader's last sign of life when taking over."""
        async with db.transaction() as s:
            state = await s.get(SopSchedulerState, "sop")
            previous = state.seen_at if state else None
            now = now_utc()
            if state is None:
                s.add(SopSchedulerState(name="sop", leader=self.name, started_at=now, seen_at=now))
            else:
                if took_over:
                    state.leader, state.started_at = self.name, now
                state.seen_at = now
        return previous

    # --- jobs -----------------------------------------------------------------------------------------
    def _trigger(self, plan: SopPlan):
        return rules.plan_trigger(plan, self.tz)

    async def sync_jobs(self) -> None:
        """Make the scheduler's jobs match the plans (added, changed, deleted)."""
        async with db.session() as s:
            rows = (await s.execute(sa.select(SopPlan.id, SopPlan.updated_at, SopPlan.deleted_at))).all()
        wanted = {pid: updated for pid, updated, deleted in rows if deleted is None}
        for pid in list(self.jobs):
            if pid not in wanted:
                self._remove(pid)
        changed = [pid for pid, updated in wanted.items() if self.jobs.get(pid) != updated]
        for start in range(0, len(changed), 500):
            async with db.session() as s:
                found = list((await s.execute(sa.select(SopPlan).where(
                    SopPlan.id.in_(changed[start:start + 500])))).scalars())
            for plan in found:
                self._schedule(plan, wanted[plan.id])

    def _schedule(self, plan: SopPlan, updated: datetime) -> None:
        """(Re)make the plan's job from its current row."""
        pid = plan.id
        self._remove(pid)
        try:
            trig = self._trigger(plan)
        except (ValueError, rules.ScheduleError, KeyError):
            logger.exception("sop plan has an unusable schedule", extra={"plan_id": pid})
            self.jobs[pid] = updated
            return
        self.triggers[pid] = trig
        self.scheduler.add_job(self._due, trig, args=[pid], id=f"plan-{pid}", replace_existing=True,
                               name=f"sop plan {pid}")
        self.jobs[pid] = updated

    def _remove(self, pid: int) -> None:
        self.jobs.pop(pid, None)
        self.triggers.pop(pid, None)
        with contextlib.suppress(Exception):
            self.scheduler.remove_job(f"plan-{pid}")

    async def _due(self, plan_id: int) -> None:
        """An APScheduler job: the plan's due time that has just come."""
        trig = self.triggers.get(plan_id)
        if trig is None:
            return
        now = datetime.now(timezone.utc)
        due = rules.latest_due(trig, now + timedelta(seconds=1), self.grace + timedelta(minutes=1))
        if due is not None:
            await self.fire(plan_id, rules.to_utc_naive(due))

    async def fire(self, plan_id: int, due_at: datetime) -> None:
        """Fire a due time, together with the others that fall due within BATCH_WINDOW_S (every
        group's own 10:00 plan is one job each: they are stored in shared transactions)."""
        key = (plan_id, due_at)
        waiting = self.firings.get(key)
        if waiting is None:
            waiting = self.firings[key] = asyncio.get_running_loop().create_future()
            if self._drain is None or self._drain.done():
                self._drain = asyncio.create_task(self._fire_batch())
        await asyncio.shield(waiting)

    async def _fire_batch(self) -> None:
        await asyncio.sleep(BATCH_WINDOW_S)
        while True:
            batch = [k for k, f in self.firings.items() if not f.done()]
            if not batch:
                return
            try:
                await firing.fire_many(batch, tz=self.tz, grace=self.grace, runtime=self.runtime)
            except Exception:  # noqa: BLE001 - the next leader or restart fires them again (same keys)
                logger.exception("sop firing failed", extra={"due_times": len(batch)})
            for key in batch:
                future = self.firings.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(None)

    async def _wait_firings(self) -> None:
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)

    async def catch_up(self, last_seen: Optional[datetime]) -> int:
        """Fire the due times nobody fired while no scheduler led; how many due times."""
        now = now_utc()
        floor = now - CATCH_UP_AT_MOST
        async with db.session() as s:
            found = list((await s.execute(sa.select(SopPlan).where(SopPlan.deleted_at.is_(None)))).scalars())
        missed = []
        for plan in found:
            since = max(t for t in (floor, last_seen or floor, plan.updated_at) if t is not None)
            try:
                missed += [(plan.id, rules.to_utc_naive(due)) for due in
                           rules.due_times(self._trigger(plan), rules.from_utc_naive(since),
                                           rules.from_utc_naive(now), limit=200)]
            except (ValueError, rules.ScheduleError, KeyError):
                continue
        count = len(missed)
        if missed:
            await asyncio.gather(*(self.fire(plan_id, due) for plan_id, due in missed))
        if count:
            logger.info("sop scheduler caught up", extra={"due_times": count})
        return count

    # --- mass sends -----------------------------------------------------------------------------------
    async def follow_mass_sends(self) -> None:
        """Read unconfirmed mass sends back from the platform; remind the owner once after REMIND_AFTER."""
        from channels.wechat.outbound import mass_send
        from channels.wechat.outbound.platform import PlatformError

        async with db.session() as s:
            tasks = list((await s.execute(sa.select(MassSendTask).where(
                MassSendTask.status == "created", MassSendTask.msgid.isnot(None)).limit(200))).scalars())
        for task in tasks:
            try:
                row = await mass_send.refresh(self.client, task.msgid)
                if row is not None and row.status == "created" and row.reminders == 0 \
                        and row.created_at < now_utc() - REMIND_AFTER:
                    await mass_send.remind_owner(self.client, task.msgid)
            except PlatformError as exc:
                logger.warning("mass send check failed", extra={"msgid": task.msgid, "errcode": exc.errcode})


def platform_client(settings: Settings):
    """A platform client for reading mass-send results (None when 客户联系 is not configured)."""
    from channels.wechat.config import WeChatConfig
    from channels.wechat.outbound.platform import PlatformClient
    from channels.wechat.outbound.tokens import MemoryTokenCache

    config = WeChatConfig.from_settings(settings)
    return PlatformClient(config, MemoryTokenCache()) if config.contact else None


async def main_async() -> int:
    settings = get_settings()
    client = platform_client(settings)
    from channels.wechat.outbound.sender import OutboxOnly
    from nudges.runner import NudgeJobs

    runtime = OutboxOnly()
    scheduler = SopScheduler(settings, runtime=runtime, client=client, companions=[NudgeJobs(runtime)])
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, scheduler.stop)
    print(f"[sop] scheduler {scheduler.name} (pid {os.getpid()}) waiting for the lead", flush=True)
    try:
        await scheduler.run()
    finally:
        if client is not None:
            await client.close()
        from actions.db.engine import dispose_async_engines

        await dispose_async_engines()
    return 0


def main() -> int:
    from bot.log_format import configure

    settings = get_settings()
    configure(settings.log_level, settings.log_format, process_name="sop-scheduler")
    return asyncio.run(main_async())


if __name__ == "__main__":
    sys.exit(main())
