"""POST /api/events and the nudges' JSON API on the console app (SQLite and PostgreSQL): the token,
202 / 400 with the reason / 401, a repeated event id accepted once and acted on once, a batch whose
bad events do not cost the good ones; rules checked with their reason, approval before going live,
export and import; the nudge log per customer and who may read it; consent changed by staff."""
from __future__ import annotations

import base64
import os

import pytest
import sqlalchemy as sa
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from actions.db.engine import async_session, in_transaction
from nudges import scheduling
from nudges.models import Nudge, NudgeEvent
from nudges.rules import shipped
from tests.desk.test_console_api import StaffClient
from tests.nudges.conftest import add_customer, event, install_rules

PASSWORD = "siyu-demo"
TOKEN = "test-events-token"


@pytest.fixture
async def console(wechat_db, monkeypatch):
    from bot.settings import reset_settings_cache
    from console.app import create_app
    from desk.staff import ensure_demo_staff

    monkeypatch.setenv("SIYU_CONSOLE_SECRET", base64.urlsafe_b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("SIYU_EVENTS_TOKEN", TOKEN)
    reset_settings_cache()
    await in_transaction(lambda s: ensure_demo_staff(s, PASSWORD))
    server = TestServer(create_app(watch_interval_s=5))
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    clients = []

    async def client(username: str) -> StaffClient:
        c = StaffClient(base)
        assert await c.login(username) == 200
        clients.append(c)
        return c
    http = ClientSession()
    client.base, client.http = base, http
    yield client
    await http.close()
    for c in clients:
        await c.close()
    await server.close()
    reset_settings_cache()


async def post(console, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with console.http.post(console.base + "/api/events", json=body, headers=headers) as r:
        return r.status, await r.json()


async def request(c: StaffClient, method: str, path: str, body=None):
    async with c.http.request(method, c.base + path, json=body, headers={"X-CSRF-Token": c.csrf}) as r:
        return r.status, await r.json()


async def test_events_need_the_token_and_a_well_formed_body(console):
    await add_customer("C30001")
    good = event("ev-1", "checkout_started", "C30001", "CART-1", 1, amount=99)
    assert (await post(console, good, token=None))[0] == 401
    assert (await post(console, good, token="wrong"))[0] == 401
    for broken, reason in [({**good, "type": "order_teleported"}, "未知的事件类型"),
                           ({k: v for k, v in good.items() if k != "customer"}, "customer"),
                           ({**good, "at": "yesterday"}, "at"),
                           ({**good, "at": "2099-01-01T00:00:00+08:00"}, "未来"),
                           ({**good, "amount": "many"}, "amount"),
                           ([1, 2], "JSON 对象")]:
        status, body = await post(console, broken)
        assert status == 400 and reason in body["error"], (broken, body)
    async with console.http.post(console.base + "/api/events", data=b"{not json",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 400
    status, body = await post(console, good)
    assert status == 202 and body == {"accepted": 1, "duplicates": 0, "rejected": []}


async def test_a_repeated_event_is_accepted_once_and_acted_on_once(console):
    await add_customer("C30002", "wmDup")
    await install_rules(["cart_abandonment"])
    first = event("ev-dup", "checkout_started", "C30002", "CART-D", 1, amount=99)
    assert await post(console, first) == (202, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert await post(console, first) == (202, {"accepted": 1, "duplicates": 1, "rejected": []})
    await scheduling.process_events()
    assert await post(console, first) == (202, {"accepted": 1, "duplicates": 1, "rejected": []})
    await scheduling.process_events()
    async with async_session() as s:
        assert (await s.execute(sa.select(sa.func.count()).select_from(NudgeEvent))).scalar() == 1
        assert (await s.execute(sa.select(sa.func.count()).select_from(Nudge))).scalar() == 1


async def test_a_batch_keeps_its_good_events_whatever_the_bad_ones(console):
    await add_customer("C30003")
    batch = {"events": [event("b-1", "cart_updated", "C30003", "CART-B", 2, items=[]),
                        {"id": "b-2", "type": "cart_updated"},
                        event("b-3", "order_paid", "C30003", "SY-B", 1, amount=10),
                        event("b-1", "cart_updated", "C30003", "CART-B", 2),
                        "not an event"]}
    status, body = await post(console, batch)
    assert status == 202 and body["accepted"] == 3 and body["duplicates"] == 1
    assert [r["index"] for r in body["rejected"]] == [1, 4]
    async with async_session() as s:
        ids = set((await s.execute(sa.select(NudgeEvent.event_id))).scalars())
    assert ids == {"b-1", "b-3"}
    # all bad: 400 with the reasons
    status, body = await post(console, {"events": [{"id": "x"}]})
    assert status == 400 and body["rejected"][0]["index"] == 0
    assert (await post(console, {"events": []}))[0] == 400


async def test_unknown_customers_are_kept_and_not_acted_on(console):
    await install_rules(["cart_abandonment"])
    assert (await post(console, event("u-1", "checkout_started", "C99999", "CART-U", 1)))[0] == 202
    await scheduling.process_events()
    async with async_session() as s:
        row = (await s.execute(sa.select(NudgeEvent))).scalars().one()
    assert row.status == "ignored" and row.note == "unknown customer"


async def test_rules_are_checked_approved_exported_and_imported(console):
    lead, agent = await console("lead"), await console("agent1")
    cart = next(r for r in shipped() if r["key"] == "cart_abandonment")
    assert (await request(agent, "GET", "/api/nudges/rules"))[0] == 403
    status, body = await request(lead, "POST", "/api/nudges/rules", {**cart, "priority": "urgent"})
    assert status == 400 and "优先级" in body["error"]
    status, body = await request(lead, "POST", "/api/nudges/rules",
                                 {**cart, "message": {"text": "您好 {昵称}"}})
    assert status == 400 and "{昵称}" in body["error"]
    status, rule = await request(lead, "POST", "/api/nudges/rules", {**cart, "requires_approval": True})
    assert status == 201 and rule["status"] == "paused"
    assert (await request(lead, "POST", "/api/nudges/rules", cart))[0] == 409
    # going live under approval waits for an OK
    status, rule = await request(lead, "POST", f"/api/nudges/rules/{rule['id']}/status", {"status": "live"})
    assert rule["status"] == "pending"
    status, rule = await request(lead, "POST", f"/api/nudges/rules/{rule['id']}/approve")
    assert status == 200 and rule["status"] == "live" and rule["approved_by"] == "lead"
    # a change to an approved rule waits again
    changed = {**rule["definition"], "delay": {"minutes": 45}}
    status, rule = await request(lead, "PUT", f"/api/nudges/rules/{rule['id']}", changed)
    assert rule["status"] == "pending" and rule["definition"]["delay"]["minutes"] == 45
    # nor does a paused approved rule changed and started again skip the approval
    await request(lead, "POST", f"/api/nudges/rules/{rule['id']}/approve")
    await request(lead, "POST", f"/api/nudges/rules/{rule['id']}/status", {"status": "paused"})
    await request(lead, "PUT", f"/api/nudges/rules/{rule['id']}", {**changed, "delay": {"minutes": 40}})
    status, rule = await request(lead, "POST", f"/api/nudges/rules/{rule['id']}/status", {"status": "live"})
    assert rule["status"] == "pending"
    assert (await request(lead, "POST", f"/api/nudges/rules/{rule['id']}/status", ["x"]))[0] == 400
    status, body = await request(lead, "PUT", f"/api/nudges/rules/{rule['id']}", {**changed, "holdout": 0.9})
    assert status == 400 and body["error"] == "对照组比例：不能大于 0.5"
    status, exported = await request(lead, "GET", "/api/nudges/rules/export")
    assert [r["key"] for r in exported["rules"]] == ["cart_abandonment"]
    welcome = next(r for r in shipped() if r["key"] == "welcome")
    status, imported = await request(lead, "POST", "/api/nudges/rules/import", {"rules": exported["rules"] + [welcome]})
    assert imported == {"created": 1, "updated": 1}
    status, body = await request(lead, "POST", "/api/nudges/rules/import", {"rules": [{"key": "x"}]})
    assert status == 400 and "第 1 条" in body["error"]


async def test_the_nudge_log_per_customer_for_staff(console):
    from tests.nudges.test_cart_rule import treated

    [number] = treated("C31")
    await add_customer(number, "wmLog")
    await install_rules(["cart_abandonment"])
    await post(console, event("log-1", "checkout_started", number, "CART-L", 1, amount=99))
    await scheduling.process_events()
    lead, moderator = await console("lead"), await console("moderator")
    status, body = await request(lead, "GET", f"/api/nudges/log?customer={number}")
    assert status == 200
    assert [(e["rule"], e["status"]) for e in body["entries"]] == [("cart_abandonment", "scheduled")]
    entry = body["entries"][0]
    assert set(entry) >= {"rule", "status", "reason", "at"} and entry["at"].endswith("Z")
    assert (await request(lead, "GET", "/api/nudges/log?customer=C00000"))[0] == 404
    assert (await request(lead, "GET", "/api/nudges/log"))[0] == 400
    assert (await request(moderator, "GET", f"/api/nudges/log?customer={number}"))[0] == 403
    async with console.http.get(console.base + f"/api/nudges/log?customer={number}") as r:
        assert r.status == 401
    # staff record the customer's refusal; the profile shows it
    status, state = await request(lead, "POST", f"/api/nudges/customers/{number}/consent",
                                  {"category": "marketing", "granted": False})
    assert status == 200 and state["marketing"] is False and state["transactional"] is True
    status, profile = await request(lead, "GET", f"/api/nudges/customers/{number}")
    assert profile["consent_history"][0]["source"] == "staff:lead"
