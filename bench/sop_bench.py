"""Community SOP benchmark: 1,000 customer groups with 3 daily plans each (3,000 plans, one group
per plan, as when every group has its own copy), the real processes: the SOP scheduler, the
console, the WeChat gateway (its outbox worker sends) and the platform sandbox.

The three daily plans of every group fall due one minute apart (the 10:00 / 15:00 / 20:00 routine
compressed), so one run has three firings of 1,000 posts each: the rounds. Per firing: from the due
time until the last post's run row and outbox rows are committed (handed to the outbox), and until
the sandbox received the last post (delivered; the robot limit of 20 per minute per group does not
bind at one post per group). Between firings, the console's plan list (`GET /api/sop/plans`, all
3,000 plans) is timed interleaved with `GET /api/me` (the baseline: the lightest logged-in call).
The scheduler's memory with its 3,000 jobs against the same process before the plans existed.

Target: all of one firing's posts handed to the outbox within 10 s of the due time; the plan list
p95 < 300 ms.

    .venv/bin/python bench/sop_bench.py [--pg] [--groups 1000] [--no-write] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List
from zoneinfo import ZoneInfo

import aiohttp
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import write_section  # noqa: E402
from tests.support import free_port, throwaway_pg_database  # noqa: E402

PY = sys.executable
TZ = "Asia/Shanghai"
PASSWORD = "siyu-bench-1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def p95(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


class Processes:
    def __init__(self, workdir: Path, env: Dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.children: Dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: List[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        process = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.children[name] = process
        return process

    def stop(self) -> None:
        for process in self.children.values():
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in self.children.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)


async def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} not ready")


def seed_groups(groups: int) -> List[str]:
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine
    from actions.db.migrate import upgrade
    from channels.wechat.models import WeChatGroup

    upgrade()
    engine = create_sync_engine()
    ids = [f"wrBench{n:05d}" for n in range(groups)]
    with Session(engine) as session:
        session.add_all([WeChatGroup(chat_id=c, name=f"压测群{n}", owner_userid="owner01", owner_name="运营",
                                     robot_key=f"benchrobot{n:05d}", delivery_mode="robot",
                                     tags=["宝妈群" if n % 2 else "健身群"], member_count=200)
                         for n, c in enumerate(ids)])
        session.commit()
    engine.dispose()
    return ids


async def seed_staff() -> None:
    from actions.db.engine import in_transaction
    from desk import staff

    await in_transaction(lambda s: staff.add(s, "benchmod", PASSWORD, "moderator", actor="bench"))


def seed_plans(ids: List[str], first_due_local: datetime) -> None:
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine
    from community_sop.models import SopPlan, now_utc

    engine = create_sync_engine()
    now = now_utc()
    with Session(engine) as session:
        for n, chat_id in enumerate(ids):
            for k, label in enumerate(("早安", "爆品预告", "秒杀")):
                at = first_due_local + timedelta(minutes=k)
                session.add(SopPlan(name=f"{label} {chat_id}", targets={"chat_ids": [chat_id]},
                                    schedule={"kind": "daily", "time": at.strftime("%H:%M")},
                                    content=[{"type": "text", "text": f"{{群名}} {label}，今天是{{日期}}{{星期}}"}],
                                    variants=[], delivery="robot", active=True, created_by="bench",
                                    updated_by="bench", created_at=now, updated_at=now))
        session.commit()
    engine.dispose()


async def handed_and_delivered(due_utc: datetime, groups: int, sandbox: str, timeout: float = 120):
    """Seconds from the due time until all posts were handed to the outbox and delivered."""
    import sqlalchemy as sa

    from actions.db.engine import async_session
    from community_sop.models import SopRun

    handed_s = delivered_s = None
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and (handed_s is None or delivered_s is None):
            if handed_s is None:
                async with async_session() as s:
                    count, last = (await s.execute(sa.select(sa.func.count(), sa.func.max(SopRun.handed_at)).where(
                        SopRun.due_at == due_utc.replace(tzinfo=None), SopRun.handed_at.isnot(None)))).one()
                if count >= groups:
                    handed_s = (last - due_utc.replace(tzinfo=None)).total_seconds()
            if delivered_s is None:
                async with http.get(sandbox + "/sandbox/deliveries", params={"channel": "group"}) as r:
                    deliveries = (await r.json())["deliveries"]
                due_ts = due_utc.timestamp()
                mine = [d for d in deliveries if d.get("at", 0) >= due_ts - 1]
                if len(mine) >= groups:
                    delivered_s = max(d["at"] for d in mine) - due_ts
            await asyncio.sleep(0.25)
    return handed_s, delivered_s


async def console_latencies(base: str, requests: int = 30) -> Dict[str, List[float]]:
    jar = aiohttp.CookieJar(unsafe=True)
    out: Dict[str, List[float]] = {"plans": [], "me": []}
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(base + "/api/login", json={"username": "benchmod", "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
        for _ in range(requests):
            for path, key in (("/api/sop/plans", "plans"), ("/api/me", "me")):
                started = time.perf_counter()
                async with http.get(base + path) as r:
                    body = await r.read()
                    assert r.status == 200, body[:200]
                out[key].append((time.perf_counter() - started) * 1000)
    return out


async def measure(args, database_url: str, workdir: Path) -> Dict:
    os.environ["DATABASE_URL"] = database_url
    os.environ["SIYU_VAR_DIR"] = str(workdir / "var")
    from bot.settings import reset_settings_cache
    from channels.wechat.sandbox.config import sandbox_credentials

    reset_settings_cache()
    ids = seed_groups(args.groups)
    await seed_staff()
    sandbox_port, console_port, gateway_port = free_port(), free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    env = dict(os.environ, PYTHONPATH=str(REPO), SIYU_LOG_LEVEL="WARNING", SIYU_LOG_FORMAT="text",
               SIYU_CONSOLE_PORT=str(console_port), SIYU_WECHAT_PORT=str(gateway_port),
               SIYU_WECHAT_SANDBOX_PORT=str(sandbox_port), SIYU_WECHAT_WORK_API_BASE=sandbox,
               SIYU_WECHAT_MP_API_BASE=sandbox, SIYU_WECHAT_RASA_URL="http://127.0.0.1:9",
               SIYU_WECHAT_RELAY_SECRET=secrets.token_urlsafe(16),
               SIYU_CONSOLE_SECRET=base64.urlsafe_b64encode(os.urandom(32)).decode(),
               SIYU_MODEL_SERVER_TOKEN=secrets.token_urlsafe(16), SIYU_ACTIVE_MODEL=str(workdir / "none.tar.gz"),
               **sandbox_credentials())
    procs = Processes(workdir, env)
    try:
        procs.start("sandbox", [PY, "-m", "channels.wechat.sandbox", "serve", "--port", str(sandbox_port),
                                "--bot-url", f"http://127.0.0.1:{gateway_port}"])
        await wait_http(sandbox + "/sandbox/health")
        async with aiohttp.ClientSession() as http:
            for n, chat_id in enumerate(ids):
                async with http.post(sandbox + "/sandbox/groups", json={
                        "chat_id": chat_id, "name": f"压测群{n}", "owner": "owner01",
                        "robot_key": f"benchrobot{n:05d}"}) as r:
                    assert r.status == 200
        procs.start("gateway", [PY, "-m", "channels.wechat.gateway", "--port", str(gateway_port)])
        procs.start("console", [PY, "-m", "console"])
        scheduler = procs.start("scheduler", [PY, "-m", "community_sop.scheduler"])
        await wait_http(f"http://127.0.0.1:{gateway_port}/health")
        await wait_http(f"http://127.0.0.1:{console_port}/health")
        await asyncio.sleep(5)
        idle_rss = psutil.Process(scheduler.pid).memory_info().rss / 2**20
        local_now = datetime.now(ZoneInfo(TZ))
        first_due = (local_now + timedelta(seconds=args.lead_s + 60)).replace(second=0, microsecond=0)
        started = time.perf_counter()
        seed_plans(ids, first_due)
        seeded_s = time.perf_counter() - started
        rounds: List[Dict] = []
        base = f"http://127.0.0.1:{console_port}"
        for k in range(3):
            due_local = first_due + timedelta(minutes=k)
            wait = (due_local - datetime.now(ZoneInfo(TZ))).total_seconds() - 20
            if wait > 0:
                await asyncio.sleep(wait)
            latencies = await console_latencies(base, args.requests)
            rss = psutil.Process(scheduler.pid).memory_info().rss / 2**20
            handed, delivered = await handed_and_delivered(due_local.astimezone(timezone.utc), len(ids), sandbox)
            rounds.append({"handed_s": handed, "delivered_s": delivered, "rss_mb": rss,
                           "plans_p50": statistics.median(latencies["plans"]), "plans_p95": p95(latencies["plans"]),
                           "me_p50": statistics.median(latencies["me"]), "me_p95": p95(latencies["me"])})
            print(f"[bench] firing {k + 1}: {rounds[-1]}", flush=True)
        return {"rounds": rounds, "idle_rss_mb": idle_rss, "seeded_s": seeded_s, "groups": len(ids),
                "plans": 3 * len(ids)}
    finally:
        procs.stop()


def report(result: Dict, deployment: str) -> str:
    rounds = result["rounds"]

    def med(key: str) -> float:
        values = [r[key] for r in rounds if r[key] is not None]
        return statistics.median(values) if values else float("nan")

    def cells(key: str, fmt: str) -> str:
        return " / ".join(fmt.format(r[key]) if r[key] is not None else "—" for r in rounds)

    handed, plans95 = med("handed_s"), med("plans_p95")
    # the target holds for every firing, not for the median one
    worst = max((r["handed_s"] for r in rounds if r["handed_s"] is not None), default=float("inf"))
    if any(r["handed_s"] is None for r in rounds):
        worst = float("inf")
    lines = [
        f"`bench/sop_bench.py{' --pg' if deployment != 'SQLite' else ''}`: {result['groups']:,} customer groups with "
        f"3 daily plans each ({result['plans']:,} plans, one group per plan), {deployment}; the real processes: the "
        "SOP scheduler (APScheduler, leader lock), the console, the WeChat gateway's outbox worker and the platform "
        "sandbox, on the same 2 cores. The three daily plans of each group fall due one minute apart, so a run has "
        f"three firings of {result['groups']:,} posts (the rounds; medians). Handed over: from the due time to "
        "the commit of the last run row with its outbox rows; delivered: to the sandbox receiving the last post. "
        "The plan list "
        "(`GET /api/sop/plans`, every plan with next due time, target count and run counts) is timed between "
        "firings, interleaved with `GET /api/me` as the baseline. Scheduler memory: RSS with the jobs of all plans "
        "against the same process before the plans existed.",
        "",
        "| measure | median | per firing | target |",
        "| --- | ---: | --- | --- |",
        f"| all posts of a firing handed to the outbox (s after due) | {handed:.1f} | {cells('handed_s', '{:.1f}')} "
        "| < 10 s |",
        f"| all posts delivered to the groups (s after due) | {med('delivered_s'):.1f} | "
        f"{cells('delivered_s', '{:.1f}')} | |",
        f"| plan list p50 / p95 (ms) | {med('plans_p50'):.0f} / {plans95:.0f} | {cells('plans_p95', '{:.0f}')} "
        "| p95 < 300 ms |",
        f"| baseline `/api/me` p50 / p95 (ms) | {med('me_p50'):.0f} / {med('me_p95'):.0f} | "
        f"{cells('me_p95', '{:.0f}')} | |",
        f"| plan list p95 / baseline p95 | {plans95 / med('me_p95'):.1f}× | | |",
        f"| scheduler RSS with {result['plans']:,} jobs (MiB) | {med('rss_mb'):.0f} | {cells('rss_mb', '{:.0f}')} | |",
        f"| scheduler RSS before any plan (MiB) | {result['idle_rss_mb']:.0f} | | |",
        "",
        f"Target (\"all of one firing's posts handed to the outbox within 10 s of the due time; plan list p95 < "
        f"300 ms\"; every firing): handed over **{'met' if worst < 10 else 'not met'}** (worst {worst:.1f} s), "
        "plan list "
        f"**{'met' if plans95 < 300 else 'not met'}**.",
    ]
    return "\n".join(lines)


async def run(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="siyu-sop-bench-"))
    try:
        if args.pg:
            with throwaway_pg_database(PG_ADMIN_URL, "siyu_sop_bench") as url:
                result = await measure(args, url, workdir)
            deployment = "PostgreSQL"
        else:
            result = await measure(args, f"sqlite:///{workdir / 'shop.db'}", workdir)
            deployment = "SQLite"
        text = report(result, deployment)
        print(text)
        if not args.no_write:
            write_section("sop-pg" if args.pg else "sop", "## Community SOP: 1,000 groups x 3 daily plans"
                          + (" (PostgreSQL)" if args.pg else "") + "\n\n" + text)
        return 0
    finally:
        if args.keep:
            print(f"[bench] logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL (a throwaway database) instead of SQLite")
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30, help="plan-list requests per round")
    parser.add_argument("--lead-s", type=int, default=30, help="seconds between seeding and the first due minute")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
