"""The SOP's JSON API (the console app on the seeded demo shop, SQLite and PostgreSQL): who may use
it, the shapes outside checks rely on, plans that are refused with their reason, the preview of
what each group receives, pause / start / delete, the run log, the calendar, numbers, keyword
replies and the moderation queue."""
from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp.test_utils import TestServer

from actions.db.engine import in_transaction
from community_sop.models import SopModerationHit
from tests.desk.test_console_api import StaffClient

PASSWORD = "siyu-demo"
CST = timezone(timedelta(hours=8))


@pytest.fixture
async def console(shop_db, monkeypatch):
    from bot.settings import reset_settings_cache
    from console.app import create_app
    from desk.staff import ensure_demo_staff

    monkeypatch.setenv("SIYU_CONSOLE_SECRET", base64.urlsafe_b64encode(os.urandom(32)).decode())
    reset_settings_cache()
    await in_transaction(lambda s: ensure_demo_staff(s, PASSWORD))
    server = TestServer(create_app(watch_interval_s=5))
    await server.start_server()
    clients = []

    async def client(username: str) -> StaffClient:
        c = StaffClient(str(server.make_url("")).rstrip("/"))
        assert await c.login(username) == 200
        clients.append(c)
        return c
    yield client
    for c in clients:
        await c.close()
    await server.close()
    reset_settings_cache()


async def request(c: StaffClient, method: str, path: str, body=None):
    async with c.http.request(method, c.base + path, json=body, headers={"X-CSRF-Token": c.csrf}) as r:
        return r.status, await r.json()


def plan(name=None, **changes):
    body = {"name": name or f"测试计划-{uuid.uuid4().hex[:6]}",
            "targets": {"chat_ids": ["wrDemoGroup01", "wrDemoGroup02"]},
            "schedule": {"kind": "daily", "time": "10:00"},
            "content": [{"type": "text", "text": "早上好，{群名}！今天{星期}"}, {"type": "product", "spu": "NZ1001"}],
            "delivery": "robot", "active": True}
    body.update(changes)
    return body


async def test_an_agent_is_refused_and_a_moderator_sees_the_demo_groups(console):
    agent = await console("agent1")
    for path in ("/api/sop/groups", "/api/sop/plans", "/api/sop/plans/1/runs"):
        status, body = await agent.get(path)
        assert status == 403 and body["error"]
    status, _ = await request(agent, "POST", "/api/sop/plans", plan())
    assert status == 403
    moderator = await console("moderator")
    status, body = await moderator.get("/api/sop/groups")
    assert status == 200
    groups = {g["chat_id"]: g for g in body["groups"]}
    assert {"wrDemoGroup01", "wrDemoGroup05"} <= set(groups) and len(groups) >= 5
    assert set(groups["wrDemoGroup02"]) >= {"chat_id", "name", "owner", "tags", "members"}
    assert groups["wrDemoGroup02"]["tags"] == ["宝妈群"] and groups["wrDemoGroup02"]["members"] > 0
    assert {"新人群", "宝妈群", "健身群", "VIP群"} <= set(body["tags"])
    lead = await console("lead")
    assert (await lead.get("/api/sop/plans"))[0] == 200, "supervisors may use it too"


@pytest.mark.parametrize("change, reason", [
    ({"name": "   "}, "name"),
    ({"targets": {}}, "targets"),
    ({"targets": {"chat_ids": []}}, "chat_ids"),
    ({"schedule": {"kind": "hourly"}}, "schedule.kind"),
    ({"schedule": {"kind": "daily", "time": "25:61"}}, "time"),
    ({"schedule": {"kind": "weekly", "weekdays": [0, 8], "time": "10:00"}}, "weekdays"),
    ({"schedule": {"kind": "cron", "expr": "every day"}}, "cron"),
    ({"schedule": {"kind": "once", "at": "2026-12-24T10:00:00"}}, "时区"),
    ({"schedule": {"kind": "once", "at": "2020-01-01T10:00:00+08:00"}}, "过去"),
    ({"schedule": {"kind": "after_group_created", "days": -1, "time": "10:00"}}, "days"),
    ({"content": []}, "content"),
    ({"content": [{"type": "video"}]}, "type"),
    ({"content": [{"type": "link", "title": "活动", "url": "javascript:alert(1)"}]}, "链接"),
    ({"content": [{"type": "product"}]}, "spu"),
    ({"delivery": "sms"}, "delivery"),
])
async def test_invalid_plans_get_400_with_the_reason(console, change, reason):
    moderator = await console("moderator")
    status, body = await request(moderator, "POST", "/api/sop/plans", plan(**change))
    assert status == 400 and reason in body["error"], body


async def test_plan_lifecycle_and_the_shapes_of_the_api(console):
    moderator = await console("moderator")
    status, created = await request(moderator, "POST", "/api/sop/plans", plan(
        variants=[{"group_tag": "宝妈群", "content": [{"type": "text", "text": "宝妈们早上好，{群名}"}]}]))
    assert status == 201, created
    assert set(created) >= {"id", "name", "targets", "schedule", "content", "delivery", "active", "warnings"}
    assert created["next_due"].endswith("+08:00") and "T10:00:00" in created["next_due"]
    plan_id = created["id"]
    status, listed = await moderator.get("/api/sop/plans")
    mine = next(p for p in listed["plans"] if p["id"] == plan_id)
    assert mine["targets_count"] == 2 and mine["schedule_text"] == "每天 10:00"
    changed = dict(plan(name=created["name"]), schedule={"kind": "weekly", "weekdays": [1, 3, 5], "time": "20:00"},
                   targets={"group_tag": "健身群"})
    status, updated = await request(moderator, "PUT", f"/api/sop/plans/{plan_id}", changed)
    assert status == 200 and updated["schedule"]["weekdays"] == [1, 3, 5] and updated["targets_count"] >= 1
    status, paused = await request(moderator, "POST", f"/api/sop/plans/{plan_id}/active", {"active": False})
    assert status == 200 and paused["active"] is False and paused["next_due"] is None
    status, runs = await moderator.get(f"/api/sop/plans/{plan_id}/runs")
    assert status == 200 and runs == {"runs": []}
    status, _ = await request(moderator, "DELETE", f"/api/sop/plans/{plan_id}")
    assert status == 200
    assert (await moderator.get(f"/api/sop/plans/{plan_id}"))[0] == 404
    assert all(p["id"] != plan_id for p in (await moderator.get("/api/sop/plans"))[1]["plans"])


async def test_preview_shows_each_group_its_copy_with_the_live_price(console):
    moderator = await console("moderator")
    body = plan(variants=[{"group_tag": "宝妈群", "content": [{"type": "text", "text": "宝妈们早上好，{群名}"}]}])
    status, shown = await request(moderator, "POST", "/api/sop/preview", body)
    assert status == 200, shown
    groups = {g["chat_id"]: g for g in shown["groups"]}
    assert groups["wrDemoGroup01"]["variant"] is None and groups["wrDemoGroup02"]["variant"] == "宝妈群"
    assert groups["wrDemoGroup01"]["texts"][0].startswith("早上好，小满生活馆")
    assert groups["wrDemoGroup02"]["texts"] == ["宝妈们早上好，小满宝妈交流群"]
    assert any("¥" in t for t in groups["wrDemoGroup01"]["texts"]), "the product block shows its price"
    assert len(shown["next_due"]) == 5
    status, shown = await request(moderator, "POST", "/api/sop/preview", plan(delivery="mass_send"))
    assert any("每月最多" in w for w in shown["warnings"])
    status, shown = await request(moderator, "POST", "/api/sop/preview",
                                  plan(content=[{"type": "product", "spu": "NO-SUCH"}]))
    assert status == 200 and all(g["problems"] for g in shown["groups"])


async def test_calendar_metrics_scheduler_and_failures(console):
    moderator = await console("moderator")
    at = (datetime.now(CST) + timedelta(days=1)).replace(hour=9, minute=30, second=0, microsecond=0)
    status, created = await request(moderator, "POST", "/api/sop/plans",
                                    plan(schedule={"kind": "once", "at": at.isoformat()}))
    assert status == 201
    status, shown = await moderator.get(f"/api/sop/calendar?start={at.date().isoformat()}&days=1")
    assert status == 200 and any(e["plan_id"] == created["id"] and e["due_at"] == at.isoformat()
                                 for e in shown["entries"])
    status, numbers = await moderator.get("/api/sop/metrics?days=3")
    assert status == 200 and len(numbers["days"]) == 3
    assert set(numbers["days"][0]) >= {"day", "sent", "failed", "checkins", "members_active", "moderation_hits"}
    status, state = await moderator.get("/api/sop/scheduler")
    assert status == 200 and set(state) == {"leader", "seen_at", "alive"}
    status, failures = await moderator.get("/api/sop/failures")
    assert status == 200 and "runs" in failures
    assert (await moderator.get("/api/sop/calendar?start=tomorrow"))[0] == 400


async def test_keyword_replies_and_the_moderation_queue(console):
    moderator = await console("moderator")
    status, made = await request(moderator, "POST", "/api/sop/keywords", {
        "group_tag": "宝妈群", "keyword": "拼单", "reply": "拼单请看群公告", "cooldown_s": 120})
    assert status == 201 and made["keyword"] == "拼单"
    status, _ = await request(moderator, "POST", "/api/sop/keywords",
                              {"keyword": "拼单", "reply": "x", "cooldown_s": 1})
    assert status == 400
    status, changed = await request(moderator, "PUT", f"/api/sop/keywords/{made['id']}",
                                    dict(made, active=False))
    assert status == 200 and changed["active"] is False
    assert (await request(moderator, "DELETE", f"/api/sop/keywords/{made['id']}"))[0] == 200

    async def add_hit(s):
        hit = SopModerationHit(chat_id="wrDemoGroup03", member="wmX", member_name="路人", text="加V领福利 vx123",
                               kind="ad", reason="联系方式招揽")
        s.add(hit)
        await s.flush()
        return hit.id
    hit_id = await in_transaction(add_hit)
    status, queue = await moderator.get("/api/sop/moderation?status=open")
    assert status == 200 and any(h["id"] == hit_id and h["group_name"] for h in queue["hits"])
    status, marked = await request(moderator, "POST", f"/api/sop/moderation/{hit_id}", {"status": "false_alarm"})
    assert status == 200 and marked["status"] == "false_alarm" and marked["handled_by"] == "moderator"
    status, _ = await request(moderator, "POST", f"/api/sop/moderation/{hit_id}", {"status": "deleted"})
    assert status == 400
