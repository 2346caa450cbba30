"""Support console (escalation desk) benchmark: the real product (`python -m bot run`: trained model,
action server, console, WeChat gateway; demo mode) with 微信客服 pointed at the platform sandbox (in this
process), 1,000 open desk conversations in its database and 10 agents with the console open.

Target (same run): "With 10 agents connected and 1,000 open conversations: handoff visible in the
console p95 < 2 s; staff reply delivered to the sandbox p95 < 2 s; queue page server time p95 < 300 ms;
bot-path latency for other customers unchanged within noise (same-run comparison with the console idle)."

Each round has two phases in alternating order with the same customers: idle (no agent connected;
handoffs wait in the queue) and busy (10
agents logged in, each with the live stream open and the queue list reloaded the way console/static/
desk.js does it: after live events that change the lists, at most once a second, and every 30 s;
customers asking for a person at a fixed rate on the web IM and 微信客服; an agent claims each
微信客服 handoff and replies). Both phases carry the same open-loop bot-path load: web IM FAQ
questions from other customers. The report shows the medians of the rounds.

    .venv/bin/python bench/desk_bench.py [--scaled] [--rounds 3] [--seconds 60] [--no-write] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Dict, List, Optional, Set

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import psutil  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.report import write_section  # noqa: E402
from bench.wechat_bench import TEXTS, fmt, pct, product_env, say  # noqa: E402
from channels.wechat.sandbox.app import PLATFORM, create_app  # noqa: E402
from channels.wechat.sandbox.callbacks import CallbackSender, CallbackSigner  # noqa: E402
from channels.wechat.sandbox.config import SandboxConfig  # noqa: E402
from tests.support import IM_IDENTITY_SECRET, ProductProcess, free_port, throwaway_pg_database  # noqa: E402

PY = sys.executable
PASSWORD = "siyu-demo"
AGENTS = [f"agent{n}" for n in range(1, 11)]  # agent1, agent2 are demo staff; the others are added
OPEN_QUEUED, OPEN_ASSIGNED = 700, 300
HANDOFF_RATE, KF_EVERY = 1.0, 4  # customers asking for a person per second; every 4th on 微信客服
BOT_RATE = 5.0  # FAQ questions per second from other customers (web IM)
LIST_PATH = "/api/desk/conversations?state=queued"
# console/static/desk.js: desk steps that change the queue lists, and how often a page reloads them at most
LIST_KINDS = {"queued", "cancelled", "claimed", "assigned", "transferred", "handed_back", "closed", "snoozed",
              "reverted", "reprioritised", "sla_breach"}
LIST_EVERY_S = 1.0
TARGET_MS, LIST_TARGET_MS = 2000.0, 300.0
WAIT_S = 30.0  # after a phase: how long handoffs may take to show and replies to reach the sandbox
API_TIMEOUT = aiohttp.ClientTimeout(total=30)
PROCESSES = {"console": "console", "bot.rasa_server": "rasa", "actions.server": "actions",
             "channels.wechat.gateway": "wechat"}  # python -m <module> of each server


@dataclass
class Phase:
    busy: bool
    started: float = 0.0
    bot_ms: List[float] = field(default_factory=list)
    bot_failed: int = 0
    handoffs: Dict[str, float] = field(default_factory=dict)  # conversation id -> time.time() of the message
    handoff_failed: int = 0
    kf_users: Dict[str, str] = field(default_factory=dict)  # conversation id -> 微信客服 user
    desk_ids: Dict[str, int] = field(default_factory=dict)  # conversation id -> desk id (微信客服, from the detail)
    replies: Dict[str, tuple] = field(default_factory=dict)  # user -> (text, time.time() of the reply POST)
    reply_failed: int = 0
    list_ms: List[float] = field(default_factory=list)
    list_failed: int = 0
    page_ms: List[float] = field(default_factory=list)
    cpu: Dict[str, float] = field(default_factory=dict)  # process -> % of one core


class Agent:
    """One staff member with the workspace open: session, live stream, list reloads like desk.js."""

    def __init__(self, bench: "Bench", name: str) -> None:
        self.bench, self.name = bench, name
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=API_TIMEOUT)
        self.csrf = ""
        self.seen: Dict[object, float] = {}  # desk id and customer of each `queued` event -> arrival
        self.tasks: Set[asyncio.Task] = set()
        self.hello = asyncio.Event()
        self.reload_pending = False
        self.list_loaded_at = 0.0

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def login(self) -> None:
        async with self.http.post(self.bench.console + "/api/login",
                                  json={"username": self.name, "password": PASSWORD}) as r:
            if r.status != 200:
                raise RuntimeError(f"login of {self.name}: HTTP {r.status}")
            self.csrf = (await r.json())["csrf_token"]
        await self.post("/api/desk/presence", {"presence": "online"})

    async def get(self, path: str, into: Optional[List[float]] = None) -> Optional[dict]:
        started = time.perf_counter()
        try:
            async with self.http.get(self.bench.console + path) as r:
                body = await r.read()
                ok = r.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None
        if into is not None and ok:
            into.append((time.perf_counter() - started) * 1000)
        return json.loads(body) if ok and path.startswith("/api/") else ({} if ok else None)

    async def post(self, path: str, body: dict) -> tuple:
        """(HTTP status, the JSON answer); (0, {}) when the request failed."""
        try:
            async with self.http.post(self.bench.console + path, json=body,
                                      headers={"X-CSRF-Token": self.csrf}) as r:
                return r.status, await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return 0, {}

    async def open_workspace(self, phase: Phase) -> None:
        """What the page does when it opens: the page, staff, list, then the live stream."""
        self.hello.clear()
        await self.get("/desk/", phase.page_ms)
        await self.get("/api/desk/staff")
        await self.load_list(phase)
        self.spawn(self.stream(phase))
        self.spawn(self.safety_net(phase))

    async def stream(self, phase: Phase) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)  # pings come every 15 s
        async with self.http.get(self.bench.console + "/api/desk/stream", timeout=timeout) as r:
            if r.status != 200:
                raise RuntimeError(f"live stream of {self.name}: HTTP {r.status}")
            event = None
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event:
                    self.on_event(phase, event, json.loads(line[5:].strip()))

    def on_event(self, phase: Phase, kind: str, data: dict) -> None:
        now = time.time()
        if kind == "hello":
            self.hello.set()
            return
        if kind == "desk" and data.get("kind") == "queued":
            for key in (data["conversation"], data.get("customer")):
                if key:
                    self.seen.setdefault(key, now)
            self.bench.queued(phase, data)
        # desk.js: only events that change the lists reload them, at most once per LIST_EVERY_S
        changes_list = (kind == "desk" and data.get("kind") in LIST_KINDS) or (
            kind == "message" and data.get("assignee") == self.name)
        if changes_list and not self.reload_pending:
            self.reload_pending = True
            self.spawn(self.reload(phase))

    async def load_list(self, phase: Phase) -> None:
        if await self.get(LIST_PATH, phase.list_ms) is None:
            phase.list_failed += 1

    async def reload(self, phase: Phase) -> None:
        await asyncio.sleep(max(0.1, LIST_EVERY_S - (time.monotonic() - self.list_loaded_at)))
        self.reload_pending = False
        self.list_loaded_at = time.monotonic()
        await self.load_list(phase)

    async def safety_net(self, phase: Phase) -> None:
        while True:
            await asyncio.sleep(30)
            await self.load_list(phase)

    async def close_workspace(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        self.reload_pending = False


class Bench:
    def __init__(self, product: ProductProcess, sandbox: web.Application, config: SandboxConfig) -> None:
        self.product, self.console = product, product.console_url
        self.platform = sandbox[PLATFORM]
        self.signer, self.sender = CallbackSigner(config), CallbackSender(config)
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000), timeout=API_TIMEOUT)
        self.agents = [Agent(self, name) for name in AGENTS]
        self.resolving: Set[int] = set()
        self.claims = 0
        self.deliveries: Dict[str, List[tuple]] = {}  # 微信客服 user -> (time, text) of each send
        self.seen_deliveries = 0

    # --- customers -------------------------------------------------------------------------------
    async def ask_bot(self, phase: Phase, user: str, text: str) -> None:
        started = time.perf_counter()
        try:
            async with self.http.post(self.product.base_url + "/webhooks/im/webhook",
                                      json={"sender": user, "message": text}) as r:
                ok = r.status == 200 and bool(await r.json())
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            ok = False
        if ok:
            phase.bot_ms.append((time.perf_counter() - started) * 1000)
        else:
            phase.bot_failed += 1

    async def ask_for_person(self, phase: Phase, i: int, tag: str) -> None:
        if i % KF_EVERY == KF_EVERY - 1:
            user = f"wmdesk{tag}n{i}"
            _, token = self.platform.kf_user_message(user, "转人工")
            request = self.signer.kf_event(token, int(self.platform.now()))
            phase.kf_users[f"wecom_kf:{user}"] = user
            phase.handoffs[f"wecom_kf:{user}"] = time.time()
            ok = (await self.sender.deliver(request, self.product.wechat_url)).get("delivered", False)
        else:
            sender = f"desk{tag}n{i}"
            phase.handoffs[f"im:guest-{sender}"] = time.time()  # unsigned: an anonymous visitor
            try:
                async with self.http.post(self.product.base_url + "/webhooks/im/webhook",
                                          json={"sender": sender, "message": "转人工"}) as r:
                    ok = r.status == 200 and bool(await r.json())
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                ok = False
        phase.handoff_failed += 0 if ok else 1

    async def open_loop(self, rate: float, seconds: float, send) -> None:
        start, tasks = time.perf_counter(), []
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(i)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=WAIT_S + 30)

    # --- staff -----------------------------------------------------------------------------------
    def queued(self, phase: Phase, event: dict) -> None:
        """A handoff appeared: the 微信客服 ones (listed as "微信用户") are opened, claimed and answered."""
        if str(event.get("customer") or "").startswith("im:") or event["conversation"] in self.resolving:
            return
        self.resolving.add(event["conversation"])
        agent = self.agents[self.claims % len(self.agents)]
        self.claims += 1
        agent.spawn(self.take_over(phase, agent, event["conversation"]))

    async def take_over(self, phase: Phase, agent: Agent, desk_id: int) -> None:
        detail = await agent.get(f"/api/desk/conversations/{desk_id}")
        user = phase.kf_users.get((detail or {}).get("conversation_id"))
        if user is None:
            return
        phase.desk_ids[f"wecom_kf:{user}"] = desk_id
        if (await agent.post(f"/api/desk/conversations/{desk_id}/claim", {}))[0] != 200:
            phase.reply_failed += 1
            return
        text = f"您好，我是{agent.name}，您的问题我来处理（{desk_id}）"
        phase.replies[user] = (text, time.time())
        status, answer = await agent.post(f"/api/desk/conversations/{desk_id}/reply", {"text": text})
        if status not in (200, 202) or answer.get("delivery") not in ("queued", "delivered"):  # 202 when refused too
            phase.reply_failed += 1
            del phase.replies[user]

    def collect(self) -> None:
        for record in self.platform.deliveries[self.seen_deliveries:]:
            if record["channel"] == "kf":
                text = (record.get("content") or {}).get("content") or ""
                self.deliveries.setdefault(record["to"], []).append((record["at"], text))
        self.seen_deliveries = len(self.platform.deliveries)

    def delivered_ms(self, phase: Phase) -> Dict[str, float]:
        self.collect()
        found = {}
        for user, (text, posted) in phase.replies.items():
            times = [at for at, sent in self.deliveries.get(user, []) if sent == text]
            if times:
                found[user] = (min(times) - posted) * 1000
        return found

    def visible_ms(self, phase: Phase, kf: bool) -> tuple:
        """Latencies over (handoff x agent) and how many of those pairs never saw the handoff."""
        values, missing = [], 0
        for conversation, sent in phase.handoffs.items():
            if (conversation in phase.kf_users) != kf:
                continue
            key = phase.desk_ids.get(conversation) if kf else conversation
            for agent in self.agents:
                if key is not None and key in agent.seen:
                    values.append((agent.seen[key] - sent) * 1000)
                else:
                    missing += 1
        return values, missing

    def settled(self, phase: Phase) -> bool:
        kf_done = len(self.delivered_ms(phase)) + phase.reply_failed >= len(phase.kf_users)
        return kf_done and self.visible_ms(phase, False)[1] == 0 and self.visible_ms(phase, True)[1] == 0

    # --- phases ----------------------------------------------------------------------------------
    async def run(self, busy: bool, seconds: float, tag: str) -> Phase:
        phase = Phase(busy)
        cpu_before = cpu_seconds(self.product)
        phase.started = time.perf_counter()
        if busy:
            for agent in self.agents:
                agent.seen.clear()
            await asyncio.gather(*(agent.open_workspace(phase) for agent in self.agents))
            await asyncio.wait_for(asyncio.gather(*(agent.hello.wait() for agent in self.agents)), timeout=15)
        # the customers are the same in both phases (those asking for a person too): only the staff differ
        loads = [self.open_loop(BOT_RATE, seconds, lambda i: self.ask_bot(phase, f"q{tag}n{i}", TEXTS[i % len(TEXTS)])),
                 self.open_loop(HANDOFF_RATE, seconds, lambda i: self.ask_for_person(phase, i, tag))]
        await asyncio.gather(*loads)
        deadline = time.monotonic() + WAIT_S
        while busy and time.monotonic() < deadline and not self.settled(phase):
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - phase.started
        phase.cpu = {name: 100 * (cpu_seconds(self.product).get(name, 0.0) - used) / elapsed
                     for name, used in cpu_before.items()}
        if busy:
            await asyncio.gather(*(agent.close_workspace() for agent in self.agents))
        if not self.product.alive():
            raise RuntimeError(f"the product stopped during the benchmark: see {self.product.log}")
        return phase

    def tally(self, phase: Phase) -> Dict[str, float]:
        t = {"bot_p50": pct(phase.bot_ms, 50), "bot_p95": pct(phase.bot_ms, 95), "bot_n": len(phase.bot_ms),
             "bot_failed": phase.bot_failed, **{f"cpu_{k}": v for k, v in phase.cpu.items()}}
        if phase.busy:
            im, im_missing = self.visible_ms(phase, False)
            kf, kf_missing = self.visible_ms(phase, True)
            replies = list(self.delivered_ms(phase).values())
            for name, values in (("im", im), ("kf", kf), ("reply", replies), ("list", phase.list_ms),
                                 ("page", phase.page_ms)):
                t.update({f"{name}_p50": pct(values, 50), f"{name}_p95": pct(values, 95), f"{name}_n": len(values)})
            t.update(missing=im_missing + kf_missing, handoff_failed=phase.handoff_failed,
                     list_failed=phase.list_failed, reply_lost=len(phase.kf_users) - len(replies),
                     handoffs=len(phase.handoffs))
        return t

    async def close(self) -> None:
        for agent in self.agents:
            await agent.close_workspace()
            await agent.http.close()
        await self.sender.close()
        await self.http.close()


def cpu_seconds(product: ProductProcess) -> Dict[str, float]:
    """CPU time used so far by each server of the product (with its own children) and by this process."""
    used = {"bench": sum(psutil.Process().cpu_times()[:2])}
    try:
        children = psutil.Process(product.process.pid).children()
    except psutil.NoSuchProcess:
        return used
    for child in children:
        try:
            argv = child.cmdline()
            name = PROCESSES.get(argv[argv.index("-m") + 1]) if "-m" in argv[:-1] else None
            if name:
                used[name] = sum(sum(p.cpu_times()[:2]) for p in [child, *child.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    return used


async def seed_desk(database_url: str) -> None:
    """1,000 open conversations (queued and held by the 10 agents) and the agents' accounts, made with the
    desk's own functions in the product's database before it starts."""
    os.environ["DATABASE_URL"] = database_url
    from bot.settings import get_settings, reset_settings_cache

    reset_settings_cache()
    import sqlalchemy as sa

    from actions.db.engine import dispose_async_engines, in_transaction
    from actions.db.models import Customer
    from desk import handoff, queue, staff

    logging.getLogger("actions.audit").setLevel(logging.ERROR)  # one audit line per claim otherwise
    rng = random.Random(7)
    shop = get_settings().shop
    words = ["转人工", "我要投诉，东西坏了", "退款怎么还没到账", "快递三天没动了", "你们这什么服务，气死了",
             "不给处理我就打12315", "能不能快点，急用", "发票开错了找人工", "要求退差价", "这个尺码问题机器人说不清"]
    reasons = ["customer_request", "complaint", "refund_amount", "logistics_exception", "anger", "dispute",
               "urgency", "customer_request", "unsure", "misunderstood"]

    async def work(s):
        for name in AGENTS:
            if await staff.by_username(s, name) is None:
                await staff.add(s, name, PASSWORD, "agent", display_name=f"客服{name[5:]}号", actor="bench")
        customers = list((await s.execute(sa.select(Customer))).scalars())
        now = handoff.now_utc()
        for n in range(OPEN_QUEUED + OPEN_ASSIGNED):
            customer = customers[n % len(customers)] if n % 2 == 0 and customers else None
            channel = ("im:u", "wecom_kf:wmseed", "mp:oseed")[n % 3]
            k = rng.randrange(len(words))
            result = await handoff.request(
                s, shop, f"{channel}{900000 + n}", reasons[k], words[k], actor="customer",
                customer_id=customer.id if customer else None, customer_name=customer.name if customer else "",
                customer_level=customer.level if customer else None)
            row = result.conversation
            row.queued_at = row.last_customer_at = now - timedelta(minutes=rng.uniform(0, 8 * 60))
            await s.flush()
            if n >= OPEN_QUEUED:
                await queue.claim(s, row.id, queue.Staff(AGENTS[n % len(AGENTS)], "agent"))

    try:
        await in_transaction(work)
    finally:
        await dispose_async_engines()


def median_of(rounds: List[Dict[str, float]], key: str) -> float:
    values = [t[key] for t in rounds if t.get(key) == t.get(key)]
    return statistics.median(values) if values else float("nan")


def report(idle: List[Dict], busy: List[Dict], args, deployment: str) -> str:
    m = {k: median_of(busy, k) for k in busy[0]}
    quiet = {k: median_of(idle, k) for k in idle[0]}
    total = {k: sum(t[k] for t in busy) for k in ("im_n", "kf_n", "reply_n", "list_n", "page_n", "bot_n", "missing",
                                                      "handoff_failed", "reply_lost", "handoffs", "list_failed")}
    ratio50, ratio95 = m["bot_p50"] / quiet["bot_p50"], m["bot_p95"] / quiet["bot_p95"]
    # noise: how far apart the idle rounds were (at least 10 %)
    spread = max([0.10] + [(max(t[k] for t in idle) - min(t[k] for t in idle)) / quiet[k]
                           for k in ("bot_p50", "bot_p95")])
    visible_ok = max(m["im_p95"], m["kf_p95"]) < TARGET_MS and total["missing"] == 0
    reply_ok = m["reply_p95"] < TARGET_MS and total["reply_lost"] == 0
    list_ok = m["list_p95"] < LIST_TARGET_MS and total["list_failed"] == 0
    bot_ok = max(ratio50, ratio95) <= 1 + spread
    ok = {True: "met", False: "not met"}

    def row(what: str, key: str, n: int, target: str) -> str:
        return f"| {what} | {n} | {fmt(m[key + '_p50'])} | {fmt(m[key + '_p95'])} | {target} |"

    def per_round(key: str, rounds: List[Dict]) -> str:
        return " / ".join(fmt(t[key]) for t in rounds)

    cpu = "; ".join(f"{name} {quiet.get('cpu_' + name, float('nan')):.0f} → {m.get('cpu_' + name, float('nan')):.0f}"
                    for name in ("console", "rasa", "actions", "wechat", "bench"))
    return "\n".join([
        "## Support console: 10 agents and 1,000 open conversations, against the console idle"
        + (" (PostgreSQL + Redis + 2 workers)" if args.scaled else ""),
        "",
        f"`bench/desk_bench.py{' --scaled' if args.scaled else ''}`: the product (`python -m bot run` in demo mode: "
        f"trained model, action server, console, WeChat gateway; {deployment}) with 微信客服 pointed at the platform "
        f"sandbox, which runs in the benchmark process with the load generator, on the same 2 cores. The database "
        f"holds {OPEN_QUEUED + OPEN_ASSIGNED:,} open desk conversations before the start ({OPEN_QUEUED} queued, "
        f"{OPEN_ASSIGNED} held by the agents; made with `desk.handoff.request` / `desk.queue.claim`, queued over the "
        f"last 8 hours). Each round runs two phases of {args.seconds:g} s in alternating order with the same "
        f"customers: web IM FAQ questions from other customers at {BOT_RATE:g}/s (open loop, a new customer each) "
        f"and customers asking for a person (\"转人工\") at {HANDOFF_RATE:g}/s, every {KF_EVERY}th on 微信客服. "
        f"**idle**: no agent connected (the handoffs wait in the queue); **busy**: {len(AGENTS)} agents logged in, "
        "each with the workspace open as console/static/desk.js keeps it (`/desk/`, staff list, queue list, the "
        "live stream `/api/desk/stream`; the queue list reloaded after live events that change lists, at most "
        "once a second, and every 30 s); an agent opens, claims and answers each 微信客服 handoff. "
        f"{args.rounds} round{'s' if args.rounds > 1 else ''}; medians of the "
        "rounds; samples are totals. Handoff "
        "visible: from the customer's message (webhook POST, or the platform's callback POST for 微信客服) to the "
        "`queued` event on each agent's stream, over handoff x agent. Staff reply: from the reply POST to "
        "`kf/send_msg` reaching the sandbox. Queue list and page: client-side on localhost (server time plus the "
        "loopback round trip), `GET /api/desk/conversations?state=queued` returns the first 200 of the waiting "
        "conversations with their counts. Bot path: the webhook's round trip (its response carries the reply). "
        "Latencies in ms.",
        "",
        "| what | samples | p50 | p95 | target |",
        "| --- | --- | --- | --- | --- |",
        row("handoff visible in the console, web IM", "im", total["im_n"], f"p95 < 2,000: **{ok[visible_ok]}**"),
        row("handoff visible in the console, 微信客服", "kf", total["kf_n"], f"p95 < 2,000: **{ok[visible_ok]}**"),
        row("staff reply at the sandbox (微信客服)", "reply", total["reply_n"], f"p95 < 2,000: **{ok[reply_ok]}**"),
        row(f"queue list `GET {LIST_PATH}`", "list", total["list_n"], f"p95 < 300: **{ok[list_ok]}**"),
        row("workspace page `GET /desk/`", "page", total["page_n"], "-"),
        f"| bot path, console idle | {sum(t['bot_n'] for t in idle)} | {fmt(quiet['bot_p50'])} | "
        f"{fmt(quiet['bot_p95'])} | - |",
        f"| bot path, console busy | {total['bot_n']} | {fmt(m['bot_p50'])} | {fmt(m['bot_p95'])} | busy / idle "
        f"p50 {ratio50:.2f}, p95 {ratio95:.2f}, noise {spread:.0%}: **{ok[bot_ok]}** |",
        "",
        f"Per round (busy): handoff visible p95 IM {per_round('im_p95', busy)}, 微信客服 {per_round('kf_p95', busy)}; "
        f"reply p95 {per_round('reply_p95', busy)}; queue list p95 {per_round('list_p95', busy)}; bot path p95 "
        f"idle {per_round('bot_p95', idle)}, busy {per_round('bot_p95', busy)}. Handoffs {total['handoffs']} "
        f"(failed requests {total['handoff_failed']}; handoff x agent never shown {total['missing']}); 微信客服 "
        f"replies not at the sandbox {total['reply_lost']}; queue list requests of the agents "
        f"{total['list_n'] / (len(busy) * args.seconds):.1f}/s (failed {total['list_failed']}); bot-path failures idle "
        f"{sum(t['bot_failed'] for t in idle)}, busy {sum(t['bot_failed'] for t in busy)}. CPU, % of one core, "
        f"idle → busy: {cpu}. Load average (1 min) at the end: {os.getloadavg()[0]:.1f}.",
        "",
        "Target (\"handoff visible p95 < 2 s; staff reply delivered p95 < 2 s; queue page server time p95 < 300 ms; "
        "bot-path latency for other customers unchanged within noise\"; unchanged: busy / idle of the p50 and the "
        "p95 at most 1 + the spread of the idle rounds, at least 10 %): "
        + ", ".join(f"{name} **{ok[v]}**" for name, v in (("visible", visible_ok), ("reply", reply_ok),
                                                           ("queue page", list_ok), ("bot path", bot_ok))) + ".",
    ])


async def measure(args, database_url: Optional[str], redis_url: Optional[str], workers: int) -> int:
    var_dir = Path(tempfile.mkdtemp(prefix="desk-bench-"))
    sandbox_port = free_port()
    env = product_env(var_dir, sandbox_port, database_url, redis_url, workers)
    env.update({"SIYU_DEMO": "true", "SIYU_CONSOLE_PORT": str(free_port()), "SIYU_DEMO_STAFF_PASSWORD": PASSWORD,
                "SIYU_IM_IDENTITY_SECRET": IM_IDENTITY_SECRET, "PYTHONUNBUFFERED": "1"})
    say("seeding 1,000 open desk conversations and the agents")
    await seed_desk(env["DATABASE_URL"])
    deployment = "PostgreSQL, Redis, 2 Rasa workers" if database_url else "SQLite, one Rasa worker, no Redis"
    product = ProductProcess(env, var_dir / "product.log", start_timeout_s=600, stop_grace_s=60)
    config = SandboxConfig.from_env(env, bot_url=product.wechat_url)
    sandbox = create_app(config)
    runner = web.AppRunner(sandbox, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", sandbox_port).start()
    bench = Bench(product, sandbox, config)
    idle: List[Dict] = []
    busy: List[Dict] = []
    say(f"starting the product ({deployment}; {var_dir})")
    try:
        product.start()
        await asyncio.gather(*(agent.login() for agent in bench.agents))
        say("warm-up: a busy phase of 5 s")
        t = bench.tally(await bench.run(True, 5.0, "w"))
        say(f"warm-up: visible p95 IM {fmt(t['im_p95'])} / kf {fmt(t['kf_p95'])} ms, reply p95 {fmt(t['reply_p95'])}"
            f" ms, list p95 {fmt(t['list_p95'])} ms, bot p95 {fmt(t['bot_p95'])} ms")
        for round_no in range(args.rounds):
            for is_busy in ((False, True) if round_no % 2 == 0 else (True, False)):
                await asyncio.sleep(3.0)
                t = bench.tally(await bench.run(is_busy, args.seconds, f"{round_no}{'b' if is_busy else 'i'}"))
                (busy if is_busy else idle).append(t)
                line = f"round {round_no + 1} {'busy' if is_busy else 'idle'}: bot p50 / p95 " \
                       f"{fmt(t['bot_p50'])} / {fmt(t['bot_p95'])} ms (failed {t['bot_failed']})"
                if is_busy:
                    line += (f"; visible p50 / p95 IM {fmt(t['im_p50'])} / {fmt(t['im_p95'])}, kf {fmt(t['kf_p50'])}"
                             f" / {fmt(t['kf_p95'])} ms (never shown {t['missing']}); reply {fmt(t['reply_p50'])} / "
                             f"{fmt(t['reply_p95'])} ms (lost {t['reply_lost']}); list {fmt(t['list_p50'])} / "
                             f"{fmt(t['list_p95'])} ms ({t['list_n']}, failed {t['list_failed']}); "
                             f"page {fmt(t['page_p95'])} ms")
                say(line + "; cpu " + ", ".join(f"{k[4:]} {v:.0f}%" for k, v in t.items() if k.startswith("cpu_")))
    finally:
        await bench.close()
        product.stop()
        await runner.cleanup()
    markdown = report(idle, busy, args, deployment)
    print(markdown)
    if not args.no_write:
        write_section("desk-scaled" if args.scaled else "desk", markdown)
        say("written to docs/BENCHMARKS.md")
    if args.keep:
        say(f"kept {var_dir} (product.log, shop.db)")
    else:
        shutil.rmtree(var_dir, ignore_errors=True)
    return 0


async def run(args) -> int:
    code = subprocess.call([PY, "-m", "bot", "train"], cwd=REPO)
    if code:
        say("training failed")
        return code
    if not args.scaled:
        return await measure(args, None, None, 1)
    import redis

    with throwaway_pg_database(args.pg, "siyu_desk_bench") as database_url:
        redis.Redis.from_url(args.redis).flushdb()
        return await measure(args, database_url, args.redis, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scaled", action="store_true",
                        help="PostgreSQL + Redis + 2 Rasa workers instead of the defaults (section desk-scaled)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="admin database")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="flushed at the start")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="per phase")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, database)")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    args = parser.parse_args()
    import uvloop  # the load generator and the sandbox share the 2 cores with the product: keep them light

    uvloop.install()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
