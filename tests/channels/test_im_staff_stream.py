"""The chat page's live stream of staff replies (GET /webhooks/im/stream, server-sent events).

The product tests run the whole product (`product_server`) and write the desk's rows straight into
its SQLite database, the way the support console stores a reply; the stream must pass each reply on
to the right client only and mark it delivered. A few checks of the request parsing, the limits and
the answer on an old database need no server."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Callable, Dict, List, Optional

import aiohttp
import pytest
from sqlalchemy import create_engine, delete, func, select
from sqlalchemy.orm import Session

from channels.im import BadRequest, StaffFeed, StreamBusy, WebIMInput, staff_event
from desk.models import DeskConversation, DeskMessage, StaffUser
from tests.support import signed

model = pytest.mark.model
EVENT_TIMEOUT_S = 15.0


# --- the product's database -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shop_db(product_server):
    # short transactions, and a busy timeout: the server writes to the same SQLite file
    engine = create_engine(product_server.database_url, future=True, connect_args={"timeout": 15})
    yield engine
    engine.dispose()


def new_sender() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def desk_conversation(engine, conversation_id: str) -> int:
    with Session(engine) as s, s.begin():
        row = DeskConversation(conversation_id=conversation_id, channel="im", customer_name="", state="assigned",
                               assignee="agent", episode=1)
        s.add(row)
        s.flush()
        return row.id


def staff_user(engine, display_name: str) -> str:
    username = f"agent-{uuid.uuid4().hex[:10]}"
    with Session(engine) as s, s.begin():
        s.add(StaffUser(username=username, display_name=display_name, role="agent", password_hash="x"))
    return username


def add_message(engine, conversation: int, text: str, author: str = "agent", kind: str = "reply",
                delivery: Optional[str] = "queued") -> int:
    with Session(engine) as s, s.begin():
        message = DeskMessage(conversation=conversation, kind=kind, author=author, text=text, channel="im",
                              delivery=delivery if kind == "reply" else None)
        s.add(message)
        s.flush()
        return message.id


def delivery_of(engine, message_id: int):
    with Session(engine) as s:
        return s.execute(select(DeskMessage.delivery, DeskMessage.delivered_at)
                         .where(DeskMessage.id == message_id)).one()


async def until(check: Callable[[], bool], timeout: float = EVENT_TIMEOUT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# --- a server-sent events client --------------------------------------------------------------------
class Events:
    """Parses the stream in a task of its own; `next` waits for the next event with a deadline."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.queue: asyncio.Queue = asyncio.Queue()
        self.comments: List[str] = []
        self.raw: List[str] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        event: Dict[str, str] = {}
        try:
            async for line in self.resp.content:
                text = line.decode("utf-8").rstrip("\r\n")
                self.raw.append(text)
                if not text:
                    if "data" in event:
                        await self.queue.put(event)
                    event = {}
                elif text.startswith(":"):
                    self.comments.append(text[1:].strip())
                else:
                    field, _, value = text.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    event[field] = event[field] + "\n" + value if field == "data" and "data" in event else value
        finally:
            await self.queue.put(None)  # the stream ended

    async def next(self, timeout: float = EVENT_TIMEOUT_S) -> Dict[str, str]:
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no event within {timeout} s") from None
        assert event is not None, "the stream ended"
        return event

    async def until_id(self, message_id: int, timeout: float = EVENT_TIMEOUT_S) -> List[Dict[str, str]]:
        """Every event up to and including the one of `message_id`."""
        deadline = time.monotonic() + timeout
        events = []
        while True:
            event = await self.next(max(0.01, deadline - time.monotonic()))
            events.append(event)
            if event.get("id") == str(message_id):
                return events

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await self.task


def stream_url(product_server) -> str:
    return f"{product_server.base_url}/webhooks/im/stream"


@contextlib.asynccontextmanager
async def staff_stream(product_server, params: Dict[str, str], headers: Optional[Dict[str, str]] = None):
    """A connected stream: its headers come once the server knows where to start, so a reply
    stored after this returns is a live one."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(stream_url(product_server), params=params, headers=headers or {}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events = Events(resp)
            try:
                yield events
            finally:
                await events.close()


# --- the product -------------------------------------------------------------------------------------
@model
async def test_signed_customer_gets_a_staff_reply_live_and_it_is_marked_delivered(product_server, shop_db):
    sender = new_sender()
    conversation = desk_conversation(shop_db, f"im:{sender}")
    username = staff_user(shop_db, "小周")
    async with staff_stream(product_server, signed(sender)) as events:
        add_message(shop_db, conversation, "内部备注：顾客很着急", author=username, kind="note")
        reply = add_message(shop_db, conversation, "您好，我是人工客服小周，马上为您处理", author=username)
        event = await events.next()
        assert event["event"] == "staff" and event["id"] == str(reply)
        data = json.loads(event["data"])
        assert data["message_id"] == reply and data["text"] == "您好，我是人工客服小周，马上为您处理"
        assert data["author_name"] == "小周" and data["at"].endswith("Z")
        assert username not in event["data"]
        # an author without a display name is not named (staff usernames stay in the console)
        unnamed = add_message(shop_db, conversation, "补充一句", author="system")
        event = await events.next()
        assert event["id"] == str(unnamed) and "author_name" not in json.loads(event["data"])
        await until(lambda: delivery_of(shop_db, unnamed)[0] == "delivered", what="delivered")
    delivery, delivered_at = delivery_of(shop_db, reply)
    assert delivery == "delivered" and delivered_at is not None
    assert not any("内部备注" in line for line in events.raw)


@model
@pytest.mark.parametrize("signature", [None, "wrong-hmac", "malformed"])
async def test_a_visitor_only_gets_the_replies_of_its_guest_conversation(product_server, shop_db, signature):
    """Knowing a customer's sender id is not enough: without its signature (or with a wrong one)
    the stream is the visitor's ("im:guest-<sender>") and never carries the customer's replies."""
    sender = new_sender()
    customer = desk_conversation(shop_db, f"im:{sender}")
    guest = desk_conversation(shop_db, f"im:guest-{sender}")
    private_before = add_message(shop_db, customer, "顾客的回复：收货地址已改为……")
    guest_before = add_message(shop_db, guest, "访客您好，连接前的回复")
    params = {"sender": sender}
    if signature == "wrong-hmac":
        params["signature"] = signed(new_sender())["signature"]
    elif signature == "malformed":
        params["signature"] = "not-a-signature"
    async with staff_stream(product_server, params) as events:
        private_live = add_message(shop_db, customer, "顾客的回复：退款已处理")
        guest_live = add_message(shop_db, guest, "访客您好，连接后的回复")
        got = await events.until_id(guest_live)
        await until(lambda: delivery_of(shop_db, guest_live)[0] == "delivered", what="delivered")
    assert [int(e["id"]) for e in got] == [guest_before, guest_live]
    assert not any("顾客的回复" in line for line in events.raw)
    assert delivery_of(shop_db, private_before)[0] == "queued"
    assert delivery_of(shop_db, private_live)[0] == "queued"


@model
async def test_after_and_last_event_id_skip_the_replies_the_client_has(product_server, shop_db):
    sender = new_sender()
    conversation = desk_conversation(shop_db, f"im:{sender}")
    waiting = add_message(shop_db, conversation, "第一条（还没送达）")
    delivered = add_message(shop_db, conversation, "第二条（已经送达）", delivery="delivered")
    failed = add_message(shop_db, conversation, "第三条（发送失败）", delivery="failed")

    # `after`: every reply after it that went out or is waiting, whatever its state, in order
    async with staff_stream(product_server, {**signed(sender), "after": str(waiting)}) as events:
        assert (await events.next())["id"] == str(delivered)
        fresh = add_message(shop_db, conversation, "第四条")
        assert (await events.next())["id"] == str(fresh)
        await until(lambda: delivery_of(shop_db, fresh)[0] == "delivered", what="delivered")
    assert delivery_of(shop_db, waiting)[0] == "queued"

    # the browser's reconnection: Last-Event-ID
    async with staff_stream(product_server, signed(sender), headers={"Last-Event-ID": str(fresh)}) as events:
        newer = add_message(shop_db, conversation, "第五条")
        assert (await events.next())["id"] == str(newer)
        await until(lambda: delivery_of(shop_db, newer)[0] == "delivered", what="delivered")

    # a new page: only what is still waiting for delivery, then what comes
    async with staff_stream(product_server, signed(sender)) as events:
        assert (await events.next())["id"] == str(waiting)
        sentinel = add_message(shop_db, conversation, "第六条")
        assert (await events.next())["id"] == str(sentinel)
    assert not any("第三条" in line for line in events.raw)
    assert delivery_of(shop_db, failed)[0] == "failed"


@model
@pytest.mark.parametrize("params", [{}, {"sender": "bad sender"}, {"sender": "x" * 65}, {"sender": "u/1"},
                                    {"sender": "u1", "after": "abc"}, {"sender": "u1", "after": "-1"}])
async def test_malformed_stream_requests_get_400(product_server, params):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with http.get(stream_url(product_server), params=params) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]


@model
async def test_a_conversation_may_hold_a_few_streams_at_once(product_server, shop_db):
    from channels.im import STREAM_MAX_PER_CONVERSATION

    sender = new_sender()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(STREAM_MAX_PER_CONVERSATION):
                resp = await stack.enter_async_context(http.get(stream_url(product_server), params=signed(sender)))
                assert resp.status == 200
            async with http.get(stream_url(product_server), params=signed(sender)) as resp:
                assert resp.status == 429 and resp.headers["Retry-After"]
            # the visitor of the same sender id is another conversation
            async with http.get(stream_url(product_server), params={"sender": sender}) as resp:
                assert resp.status == 200
        # streams that ended free their places
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while True:
            async with http.get(stream_url(product_server), params=signed(sender)) as resp:
                if resp.status == 200:
                    break
                assert resp.status == 429 and time.monotonic() < deadline
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def chromium():
    import os
    import shutil

    from tests.browser.test_chat_page import CHROMIUM

    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        from tests.conftest import unavailable

        unavailable(f"Chromium not found at {CHROMIUM} (./siyu test installs Debian's chromium)")
    return path


@contextlib.contextmanager
def demo_customer_conversation(engine, conversation_id: str):
    """The desk row of a demo customer's conversation (other tests may use it too): what this test
    adds to it is removed afterwards."""
    with Session(engine) as s:
        existing = s.execute(select(DeskConversation.id)
                             .where(DeskConversation.conversation_id == conversation_id)).scalar()
        before = s.execute(select(func.max(DeskMessage.id))).scalar() or 0
    conversation = existing or desk_conversation(engine, conversation_id)
    try:
        yield conversation
    finally:
        with Session(engine) as s, s.begin():
            s.execute(delete(DeskMessage).where(DeskMessage.conversation == conversation, DeskMessage.id > before))
            if not existing:
                s.execute(delete(DeskConversation).where(DeskConversation.id == conversation))


@model
@pytest.mark.browser
def test_the_chat_page_shows_staff_replies_of_the_current_identity(product_server, shop_db, chromium):
    from playwright.sync_api import expect, sync_playwright

    from tests.browser.test_chat_page import ARGS

    username = staff_user(shop_db, "小林")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{product_server.base_url}/webhooks/im/")
            guest = desk_conversation(shop_db, f"im:guest-{page.evaluate('guest')}")
            add_message(shop_db, guest, "访客您好，我是人工客服小林", author=username)
            staff = page.locator(".msg.staff")
            expect(staff).to_have_count(1, timeout=20_000)
            expect(staff.locator(".staff-label")).to_have_text("人工客服 · 小林")
            expect(staff.locator(".bubble")).to_have_text("访客您好，我是人工客服小林")

            # a demo customer: the page signs as them and follows their conversation instead
            expect(page.locator("#who option")).not_to_have_count(1, timeout=10_000)
            page.select_option("#who", index=1)
            sender = page.eval_on_selector("#who", "el => el.value")
            with demo_customer_conversation(shop_db, f"im:{sender}") as customer:
                add_message(shop_db, guest, "发给访客的第二条", author=username)
                add_message(shop_db, customer, "顾客您好，订单已为您加急", author=username)
                expect(staff).to_have_count(1, timeout=20_000)
                expect(staff.locator(".bubble")).to_have_text("顾客您好，订单已为您加急")
                assert "发给访客的第二条" not in page.inner_text("#log")
                page.close()
        finally:
            browser.close()


# --- no server ---------------------------------------------------------------------------------------
class FakeRequest:
    def __init__(self, args: Dict[str, str], headers: Optional[Dict[str, str]] = None) -> None:
        self.args = args
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}


def test_stream_parameters_take_the_later_of_after_and_last_event_id():
    parse = WebIMInput.stream_params
    assert parse(FakeRequest({"sender": "u1"})) == ("u1", None, None)
    assert parse(FakeRequest({"sender": "u1", "signature": "ab", "after": "7"})) == ("u1", "ab", 7)
    assert parse(FakeRequest({"sender": "u1", "after": "7"}, {"Last-Event-ID": "9"}))[2] == 9
    assert parse(FakeRequest({"sender": "u1", "after": "9"}, {"Last-Event-ID": "7"}))[2] == 9
    assert parse(FakeRequest({"sender": "u1"}, {"Last-Event-ID": "junk"}))[2] is None
    for bad in ({"sender": "u1", "after": "1.5"}, {"sender": "a b"}, {}):
        with pytest.raises(BadRequest):
            parse(FakeRequest(bad))


def test_a_staff_event_is_one_sse_event_whatever_the_text():
    from datetime import datetime

    text = "第一行\n第二行\r\ndata: 伪造\n\nevent: x"
    event = staff_event(12, text, datetime(2026, 12, 7, 8, 30), None)
    assert event.endswith("\n\n") and event.count("\n") == 4
    lines = event.splitlines()
    assert lines[:2] == ["event: staff", "id: 12"]
    assert json.loads(lines[2].removeprefix("data: ")) == {"message_id": 12, "text": text,
                                                             "at": "2026-12-07T08:30:00Z"}


async def stop(feed: StaffFeed) -> None:
    task = feed._task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_streams_are_bounded_per_process_and_per_conversation():
    feed = StaffFeed(max_total=3, max_per_conversation=2)
    try:
        a1, a2 = feed.join("im:a"), feed.join("im:a")
        with pytest.raises(StreamBusy, match="conversation"):
            feed.join("im:a")
        b1 = feed.join("im:b")
        with pytest.raises(StreamBusy, match="server"):
            feed.join("im:c")
        feed.leave(a1)
        feed.leave(a1)  # leaving twice changes nothing
        assert feed.open_streams == 2
        feed.join("im:c")
        for subscriber in (a2, b1):
            feed.leave(subscriber)
        feed.close()
        assert feed.closing
    finally:
        await stop(feed)


@pytest.fixture
def database(monkeypatch):
    from bot.settings import reset_settings_cache

    def use(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        reset_settings_cache()

    yield use
    monkeypatch.undo()
    reset_settings_cache()


async def test_an_old_database_without_the_desk_tables_gets_503(database, tmp_path):
    database(f"sqlite:///{tmp_path / 'old.db'}")
    channel = WebIMInput()
    try:
        resp = await channel._stream(None, "im:guest-u1", None)
        assert resp.status == 503
        assert "desk tables" in json.loads(resp.body)["error"]
        assert channel.staff_feed.open_streams == 0
    finally:
        await stop(channel.staff_feed)


async def test_an_unreachable_database_gets_503_not_an_error(database, tmp_path):
    (tmp_path / "a-directory.db").mkdir()
    database(f"sqlite:///{tmp_path / 'a-directory.db'}")
    channel = WebIMInput()
    try:
        resp = await channel._stream(None, "im:guest-u1", None)
        assert resp.status == 503 and resp.headers["Retry-After"]
        assert channel.staff_feed.open_streams == 0
    finally:
        await stop(channel.staff_feed)
