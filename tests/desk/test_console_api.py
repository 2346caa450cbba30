"""The support console's API against the whole product (Rasa, actions, console on SQLite): a
customer asks for a person on the web IM, staff see it arrive live, one of two agents claims it,
the bot stays silent while a person holds it, the reply is recorded with its delivery, and after
the hand back the bot answers again. Also the refusals: no session, wrong password, no CSRF
token, wrong role, not the holder."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, Dict, List, Optional

import aiohttp
import pytest

from tests.support import signed

pytestmark = pytest.mark.model
PASSWORD = "siyu-demo"


class StaffClient:
    """One staff member's browser session: cookie jar + CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          timeout=aiohttp.ClientTimeout(total=30))
        self.csrf: Optional[str] = None

    async def login(self, username: str, password: str = PASSWORD) -> int:
        async with self.http.post(f"{self.base}/api/login", json={"username": username, "password": password}) as r:
            if r.status == 200:
                self.csrf = (await r.json())["csrf_token"]
            return r.status

    async def get(self, path: str):
        async with self.http.get(f"{self.base}{path}") as r:
            return r.status, await r.json()

    async def post(self, path: str, body: Optional[Dict[str, Any]] = None, csrf: bool = True):
        headers = {"X-CSRF-Token": self.csrf} if csrf and self.csrf else {}
        async with self.http.post(f"{self.base}{path}", json=body or {}, headers=headers) as r:
            return r.status, await r.json()

    async def close(self) -> None:
        await self.http.close()


async def customer_says(product_server, sender: str, text: str) -> List[Dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{product_server.base_url}/webhooks/im/webhook",
                             data=json.dumps({**signed(sender), "message": text}),
                             timeout=aiohttp.ClientTimeout(total=30)) as r:
            assert r.status == 200
            return await r.json()


async def until(check, deadline_s: float = 15.0, what: str = "condition"):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def sse_events(client: StaffClient, found: asyncio.Queue) -> None:
    async with client.http.get(f"{client.base}/api/desk/stream", timeout=aiohttp.ClientTimeout(total=None)) as r:
        assert r.status == 200
        event = None
        async for raw in r.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event:
                await found.put((event, json.loads(line[5:].strip())))


async def test_refusals_without_login_csrf_or_role(any_product):
    base = any_product.console_url
    anonymous, agent, moderator = StaffClient(base), StaffClient(base), StaffClient(base)
    try:
        assert (await anonymous.get("/api/desk/conversations?state=queued"))[0] == 401
        assert await anonymous.login("agent1", "not-the-password") == 401
        assert await agent.login("agent1") == 200
        status, body = await agent.get("/api/desk/conversations?state=queued")
        assert status == 200 and "conversations" in body and "queued" in body["counts"]
        assert (await agent.get("/api/desk/conversations?state=nonsense"))[0] == 400
        assert (await agent.post("/api/desk/presence", {"presence": "online"}, csrf=False))[0] == 403
        assert (await agent.post("/api/desk/presence", {"presence": "online"}))[0] == 200
        assert await moderator.login("moderator") == 200
        assert (await moderator.post("/api/desk/conversations/1/claim"))[0] == 403
        assert (await agent.get("/api/desk/conversations/999999"))[0] == 404
        # logging out ends the session
        assert (await agent.post("/api/logout"))[0] == 200
        assert (await agent.get("/api/desk/conversations"))[0] == 401
    finally:
        for client in (anonymous, agent, moderator):
            await client.close()


async def test_handoff_claim_silence_reply_and_hand_back(any_product):
    base = any_product.console_url
    agent1, agent2 = StaffClient(base), StaffClient(base)
    sender = f"desk{uuid.uuid4().hex[:8]}"
    conversation_id = f"im:{sender}"
    events: asyncio.Queue = asyncio.Queue()
    listener = None
    try:
        assert await agent1.login("agent1") == 200 and await agent2.login("agent2") == 200
        listener = asyncio.create_task(sse_events(agent2, events))
        await until(lambda: _hello(events), what="the live stream to open")

        reply = await customer_says(any_product, sender, "转人工")
        assert "工单" in reply[0]["text"] or "转接" in reply[0]["text"], reply

        # the handoff arrives live, without asking for it
        async def queued_event():
            while not events.empty():
                kind, data = events.get_nowait()
                if kind == "desk" and data.get("kind") == "queued":
                    return data
            return None
        announced = await until(queued_event, what="the live handoff event")
        conversation = announced["conversation"]
        status, listed = await agent1.get("/api/desk/conversations?state=queued")
        item = next(c for c in listed["conversations"] if c["id"] == conversation)
        assert item["channel"] == "im" and item["reason"] == "customer_request" and item["assignee"] is None
        assert set(item) >= {"id", "channel", "customer", "state", "reason", "priority", "queued_at", "assignee"}

        # two agents claim at once: one wins
        first, second = await asyncio.gather(agent1.post(f"/api/desk/conversations/{conversation}/claim"),
                                             agent2.post(f"/api/desk/conversations/{conversation}/claim"))
        assert sorted([first[0], second[0]]) == [200, 409], (first, second)
        holder, other = (agent1, agent2) if first[0] == 200 else (agent2, agent1)

        # the bot is silent while a person holds the conversation; the message reaches the transcript
        assert await customer_says(any_product, sender, "你好，在吗？我的快递一直没到") == []

        async def in_transcript():
            status, detail = await holder.get(f"/api/desk/conversations/{conversation}")
            return detail if any(m["from"] == "customer" and "快递一直没到" in m["text"]
                                 for m in detail["messages"]) else None
        detail = await until(in_transcript, what="the customer's message in the transcript")
        assert detail["state"] == "assigned" and detail["window"]["open"] is True
        said = [m for m in detail["messages"] if m["from"] == "customer"]
        assert said[0]["intent"] == "request_human"

        assert (await other.post(f"/api/desk/conversations/{conversation}/reply", {"text": "我来"}))[0] == 403
        status, sent = await holder.post(f"/api/desk/conversations/{conversation}/reply",
                                         {"text": "您好，我是客服，马上帮您查快递"})
        assert status in (200, 202) and sent["delivery"] in ("queued", "delivered")
        status, detail = await holder.get(f"/api/desk/conversations/{conversation}")
        assert any(m["from"] == "agent" and "马上帮您查快递" in m["text"] for m in detail["messages"])

        assert (await other.post(f"/api/desk/conversations/{conversation}/handback"))[0] == 403
        status, back = await holder.post(f"/api/desk/conversations/{conversation}/handback")
        assert status == 200 and back["state"] == "bot"
        answer = await customer_says(any_product, sender, "你好")
        assert answer and answer[0].get("text"), "the bot answers again after the hand back"
        status, listed = await holder.get("/api/desk/conversations?state=bot")
        assert any(c["conversation_id"] == conversation_id for c in listed["conversations"])
    finally:
        if listener:
            listener.cancel()
        await agent1.close()
        await agent2.close()


async def _hello(events: asyncio.Queue):
    if events.empty():
        return None
    kind, _ = events.get_nowait()
    return kind == "hello"
