"""The SOP scheduler with its real parts: APScheduler, the leader lock and the database (SQLite and
PostgreSQL). One of two schedulers leads and each post is handed over once; two scheduler
processes on one PostgreSQL database, the leader killed, the other takes over; a firing that
crashes half-way and is fired again; due times missed while nothing ran, inside and outside the
grace period."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from actions.db.engine import async_session, in_transaction
from channels.wechat.models import OutboxMessage, WeChatGroup
from channels.wechat.outbound import outbox
from community_sop import firing, plans
from community_sop.models import SopRun, SopSchedulerState
from community_sop.scheduler import SopScheduler
from tests.community_sop.conftest import utc_minute

GROUPS = [f"wrS{n}" for n in range(1, 5)]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def seed_groups(ids=GROUPS) -> None:
    async with async_session() as s:
        for chat_id in ids:
            s.add(WeChatGroup(chat_id=chat_id, name=f"群{chat_id}", owner_userid="owner01", robot_key=f"key-{chat_id}",
                              delivery_mode="robot", tags=["测试群"], member_count=2))
        await s.commit()


async def once_plan(at: datetime, name: str = "单次", chat_ids=GROUPS) -> int:
    data = plans.check({"name": name, "targets": {"chat_ids": list(chat_ids)},
                        "schedule": {"kind": "once", "at": at.astimezone(timezone.utc).isoformat()},
                        "content": [{"type": "text", "text": "{群名} 的通知"}], "delivery": "robot"})
    return (await in_transaction(lambda s: plans.create(s, data, "moderator"))).id


async def daily_plan(local: datetime, name: str) -> int:
    data = plans.check({"name": name, "targets": {"chat_ids": GROUPS}, "content": [{"type": "text", "text": "早"}],
                        "schedule": {"kind": "daily", "time": local.strftime("%H:%M")}, "delivery": "robot"})
    plan = await in_transaction(lambda s: plans.create(s, data, "moderator"))
    async with async_session() as s:  # made before the due time it is tested with
        (await s.get(type(plan), plan.id)).updated_at = datetime.utcnow() - timedelta(hours=2)
        await s.commit()
    return plan.id


async def counts(plan_id: int):
    async with async_session() as s:
        runs = (await s.execute(sa.select(SopRun.chat_id, SopRun.status).where(SopRun.plan_id == plan_id))).all()
        rows = (await s.execute(sa.select(sa.func.count()).select_from(OutboxMessage).where(
            OutboxMessage.channel == "robot"))).scalar()
    return runs, rows


async def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await predicate()
        if found:
            return found
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


async def test_two_schedulers_one_leads_and_each_post_is_handed_over_once(wechat_db):
    await seed_groups()
    first, second = SopScheduler(), SopScheduler()
    first.poll_s = second.poll_s = 0.3
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    try:
        await wait_until(lambda: _any_leading(first, second))
        assert first.leading.is_set() != second.leading.is_set(), "exactly one leads"
        plan_id = await once_plan(datetime.now(timezone.utc) + timedelta(seconds=4))

        async def handed():
            runs, rows = await counts(plan_id)
            return (runs, rows) if len(runs) == len(GROUPS) else None
        runs, rows = await wait_until(handed, timeout=30)
        await asyncio.sleep(1.5)  # the other scheduler's chance to do it again
        runs, rows = await counts(plan_id)
        assert sorted(c for c, _ in runs) == GROUPS and rows == len(GROUPS)
    finally:
        first.stop()
        second.stop()
        await asyncio.gather(*tasks)


async def _any_leading(*schedulers):
    return any(s.leading.is_set() for s in schedulers)


async def test_a_firing_that_crashes_half_way_is_completed_once_by_the_next(wechat_db, monkeypatch):
    await seed_groups()
    plan_id = await once_plan(datetime.now(timezone.utc) + timedelta(minutes=5))
    monkeypatch.setattr(firing, "CHUNK", 2)
    real = outbox.enqueue_in
    calls = {"n": 0}

    async def dies_in_the_second_chunk(s, messages):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("process killed")
        return await real(s, messages)
    monkeypatch.setattr(outbox, "enqueue_in", dies_in_the_second_chunk)
    due = utc_minute()
    with pytest.raises(ConnectionError):
        await firing.fire(plan_id, due)
    runs, rows = await counts(plan_id)
    assert len(runs) == 2 and rows == 2, "the first chunk committed with its outbox rows, the second not at all"
    result = await firing.fire(plan_id, due)
    assert (result.handed, result.existing) == (2, 2)
    runs, rows = await counts(plan_id)
    assert len(runs) == 4 and rows == 4


async def test_missed_due_times_inside_the_grace_period_go_out_and_older_ones_are_skipped(wechat_db):
    await seed_groups()
    local_now = datetime.now(ZoneInfo("Asia/Shanghai"))
    recent = await daily_plan(local_now - timedelta(minutes=4), "4 分钟前")
    old = await daily_plan(local_now - timedelta(minutes=30), "30 分钟前")
    async with async_session() as s:  # the last scheduler was seen an hour ago
        s.add(SopSchedulerState(name="sop", leader="gone", seen_at=datetime.utcnow() - timedelta(hours=1)))
        await s.commit()
    scheduler = SopScheduler()
    assert scheduler.grace == timedelta(minutes=10)
    async with async_session() as s:
        last_seen = (await s.get(SopSchedulerState, "sop")).seen_at
    fired = await scheduler.catch_up(last_seen)
    assert fired == 2
    recent_runs, _ = await counts(recent)
    old_runs, _ = await counts(old)
    assert {status for _, status in recent_runs} == {"pending"} and len(recent_runs) == len(GROUPS)
    assert {status for _, status in old_runs} == {"skipped"} and len(old_runs) == len(GROUPS)
    async with async_session() as s:
        reason = (await s.execute(sa.select(SopRun.reason).where(SopRun.plan_id == old).limit(1))).scalar()
    assert "宽限期" in reason


def _scheduler_process(env, log):
    return subprocess.Popen([sys.executable, "-m", "community_sop.scheduler"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


async def test_two_scheduler_processes_on_postgresql_and_the_leader_killed(postgres_db, tmp_path):
    from tests.conftest import use_database

    use_database(postgres_db)
    await seed_groups()
    env = dict(os.environ, DATABASE_URL=postgres_db, SIYU_SOP_POLL_S="0.5", PYTHONPATH=REPO,
               SIYU_VAR_DIR=str(tmp_path / "var"), SIYU_LOG_FORMAT="text")
    logs = [open(tmp_path / f"scheduler{n}.log", "w") for n in range(2)]
    processes = [_scheduler_process(env, log) for log in logs]
    try:
        async def leader():
            async with async_session() as s:
                state = await s.get(SopSchedulerState, "sop", populate_existing=True)
                return state.leader if state else None
        first_leader = await wait_until(leader, timeout=60)
        plan_id = await once_plan(datetime.now(timezone.utc) + timedelta(seconds=5), "两个进程")

        async def handed():
            runs, rows = await counts(plan_id)
            return runs if len(runs) == len(GROUPS) else None
        await wait_until(handed, timeout=60)
        await asyncio.sleep(2)
        runs, rows = await counts(plan_id)
        assert len(runs) == len(GROUPS) and rows == len(GROUPS), "each post once with two schedulers running"

        pid = int(first_leader.split(":")[1])
        victim = next(p for p in processes if p.pid == pid)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(10)
        survivor = next(p for p in processes if p is not victim)
        second = await once_plan(datetime.now(timezone.utc) + timedelta(seconds=4), "接手之后")

        async def taken_over():
            found = await leader()
            return found if found and found != first_leader else None
        new_leader = await wait_until(taken_over, timeout=60)
        assert int(new_leader.split(":")[1]) == survivor.pid

        async def second_handed():
            runs, _ = await counts(second)
            return runs if len(runs) == len(GROUPS) else None
        await wait_until(second_handed, timeout=60)
        _, rows = await counts(second)
        assert rows == 2 * len(GROUPS), "the new leader handed over the second plan's posts, once each"
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        for log in logs:
            log.close()
