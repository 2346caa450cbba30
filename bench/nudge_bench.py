"""Nudges benchmark on PostgreSQL (a throwaway database), the real processes: the console (events in)
and the scheduler (its leader acts on events and hands nudges to the outbox).

1. Event ingestion: `POST /api/events`, one event per request from 16 concurrent clients for
   `--seconds` (a tenth of them repeats of earlier ids), in rounds interleaved with `GET /health`
   under the same load as the baseline. Afterwards every distinct id must be stored once: nothing
   lost, nothing doubled. Also the batch form (100 events per request).
2. A cart rule firing for `--customers` customers at once: each has a 微信客服 identity whose reply
   window is open; their checkout_started events (posted in batches, all due at once) are acted on
   by the running scheduler; timed from the last event accepted until every nudge is decided and
   every treatment message is an outbox row (handed over; the gateway's worker then sends them at
   the platform's pace).

Targets: ingestion >= 500 events/s sustained with nothing lost; the firing handed to the outbox
within 30 s.

    .venv/bin/python bench/nudge_bench.py [--seconds 20] [--customers 10000] [--no-write] [--keep]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import machine_line, write_section  # noqa: E402
from bench.sop_bench import Processes, wait_http  # noqa: E402
from tests.support import free_port, throwaway_pg_database  # noqa: E402

PY = sys.executable
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
TOKEN = "bench-events-token"
CONCURRENCY = 16


def seed(customers: int) -> None:
    """Customers C1…Cn, each on 微信客服 with a reply window opened a minute ago; the cart rule live."""
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine
    from actions.db.migrate import upgrade
    from actions.db.models import Customer, CustomerIdentity
    from channels.wechat.models import ReplyWindow
    from nudges import rules
    from nudges.models import LIVE, NudgeRule

    upgrade()
    engine = create_sync_engine()
    now = datetime.utcnow()
    with Session(engine) as session:
        for start in range(0, customers, 5000):
            batch = [Customer(external_id=f"C{n}", name=f"顾客{n}") for n in range(start, min(customers, start + 5000))]
            session.add_all(batch)
            session.flush()
            session.add_all([CustomerIdentity(customer_id=c.id, channel="wecom_kf", external_id=f"wmB{c.external_id}")
                             for c in batch])
            session.add_all([ReplyWindow(channel="wecom_kf", user_id=f"wmB{c.external_id}", account="wkSandboxKf000001",
                                         message_at=now - timedelta(minutes=1), message_sent=0) for c in batch])
            session.commit()
        cart = next(r for r in rules.shipped() if r["key"] == "cart_abandonment")
        session.add(NudgeRule(key=cart["key"], name=cart["name"], definition=cart, status=LIVE, created_by="bench",
                              updated_by="bench"))
        session.commit()
    engine.dispose()


def count(table: str) -> int:
    import sqlalchemy as sa

    from actions.db.engine import create_sync_engine

    engine = create_sync_engine()
    with engine.connect() as conn:
        value = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
    engine.dispose()
    return value


def event(n: int, customer: int, kind: str = "product_viewed") -> Dict:
    return {"id": f"bench-{n}", "type": kind, "customer": f"C{customer}", "ref": f"SPU-{n % 97}",
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


async def burst(http: aiohttp.ClientSession, base: str, seconds: float, make) -> Dict:
    """CONCURRENCY clients sending make(i) requests for `seconds`; requests per second and failures."""
    counter = itertools.count()
    done, failed = 0, 0
    deadline = time.perf_counter() + seconds

    async def client():
        nonlocal done, failed
        while time.perf_counter() < deadline:
            method, path, body = make(next(counter))
            async with http.request(method, base + path, json=body,
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                await r.read()
                if r.status in (200, 202):
                    done += 1
                else:
                    failed += 1
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return {"rate": done / (time.perf_counter() - started), "done": done, "failed": failed}


async def ingestion(base: str, seconds: float, customers: int, rounds: int = 3) -> Dict:
    ids: set = set()
    serial = itertools.count()
    results: List[Dict] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as http:
        def one(i: int):
            n = next(serial)
            if n % 10 == 9 and n > 10:
                n = n // 2  # a repeat of an earlier id
            ids.add(n)
            return "POST", "/api/events", event(n, n % customers)

        def batch(i: int):
            body = []
            for _ in range(100):
                n = next(serial)
                ids.add(n)
                body.append(event(n, n % customers))
            return "POST", "/api/events", {"events": body}

        for k in range(rounds):
            health = await burst(http, base, seconds / 2, lambda i: ("GET", "/health", None))
            single = await burst(http, base, seconds, one)
            batched = await burst(http, base, seconds / 2, batch)
            results.append({"health": health["rate"], "single": single["rate"], "batch": batched["rate"] * 100,
                            "failed": single["failed"] + batched["failed"]})
            print(f"[bench] ingestion round {k + 1}: {results[-1]}", flush=True)
    await asyncio.sleep(1)
    stored = count("nudge_events")
    return {"rounds": results, "distinct": len(ids), "stored": stored}


async def firing(base: str, customers: int) -> Dict:
    """checkout_started for every customer, due at once; until all are decided and handed over."""
    at = (datetime.now(timezone.utc) - timedelta(minutes=31)).isoformat(timespec="seconds")
    events = [{"id": f"cart-{n}", "type": "checkout_started", "customer": f"C{n}", "ref": f"CART-{n}", "at": at,
               "items": [{"sku": "SKU-1", "name": "法式碎花雪纺连衣裙", "qty": 1, "price": 299}], "amount": 299}
              for n in range(customers)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        posted = time.perf_counter()
        for start in range(0, len(events), 1000):
            async with http.post(base + "/api/events", json={"events": events[start:start + 1000]},
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 202, await r.text()
        accepted = time.perf_counter()
    import sqlalchemy as sa

    from actions.db.engine import create_sync_engine

    engine = create_sync_engine()
    deadline = time.monotonic() + 600
    outcome: Dict = {}
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            rows = dict(conn.execute(sa.text(
                "SELECT CASE WHEN status = 'suppressed' THEN 'suppressed:' || reason ELSE status END, count(*) "
                "FROM nudges GROUP BY 1")).all())
            outbox = conn.execute(sa.text("SELECT count(*) FROM wechat_outbox")).scalar()
            decided = sum(v for k, v in rows.items() if k != "scheduled")
            # a nudge of the rule is one per cart: all are decided when none is waiting any more
            if decided >= customers and outbox >= rows.get("sent", 0):
                outcome = {"handed_s": time.perf_counter() - accepted, "post_s": accepted - posted, "states": rows,
                           "outbox": outbox}
                break
            await asyncio.sleep(0.2)
    engine.dispose()
    print(f"[bench] firing: {outcome}", flush=True)
    return outcome


async def measure(args, database_url: str, workdir: Path) -> Dict:
    os.environ["DATABASE_URL"] = database_url
    os.environ["SIYU_VAR_DIR"] = str(workdir / "var")
    # quiet hours off: the bench measures the same work at any hour of the shop's day
    import yaml

    from bot.settings import DEFAULT_SHOP_FILE, reset_settings_cache
    from channels.wechat.sandbox.config import sandbox_credentials

    shop = yaml.safe_load(DEFAULT_SHOP_FILE.read_text(encoding="utf-8"))
    shop["shop"].setdefault("nudges", {}).update({"quiet_start": "00:00", "quiet_end": "00:00"})
    (workdir / "shop.yml").write_text(yaml.safe_dump(shop, allow_unicode=True), encoding="utf-8")
    os.environ["SIYU_SHOP_FILE"] = str(workdir / "shop.yml")
    reset_settings_cache()
    started = time.perf_counter()
    seed(args.customers)
    print(f"[bench] seeded {args.customers:,} customers in {time.perf_counter() - started:.1f} s", flush=True)
    console_port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), SIYU_LOG_LEVEL="WARNING", SIYU_LOG_FORMAT="text",
               SIYU_CONSOLE_PORT=str(console_port), SIYU_EVENTS_TOKEN=TOKEN,
               SIYU_CONSOLE_SECRET=base64.urlsafe_b64encode(os.urandom(32)).decode(),
               SIYU_MODEL_SERVER_TOKEN=secrets.token_urlsafe(16), SIYU_ACTIVE_MODEL=str(workdir / "none.tar.gz"),
               SIYU_WECHAT_WORK_API_BASE="http://127.0.0.1:9", **sandbox_credentials())
    procs = Processes(workdir, env)
    base = f"http://127.0.0.1:{console_port}"
    try:
        procs.start("console", [PY, "-m", "console"])
        # the scheduler runs meanwhile, as in the product: its leader acts on what comes in
        procs.start("scheduler", [PY, "-m", "community_sop.scheduler"])
        await wait_http(base + "/health")
        result = {"ingestion": await ingestion(base, args.seconds, args.customers)}
        started = time.perf_counter()
        while count("nudge_events WHERE status = 'new'") and time.perf_counter() - started < 600:
            await asyncio.sleep(1)
        result["caught_up_s"] = time.perf_counter() - started
        result["firing"] = await firing(base, args.customers)
        result["customers"] = args.customers
        return result
    finally:
        procs.stop()


def report(result: Dict) -> str:
    rounds = result["ingestion"]["rounds"]

    def per_round(key: str) -> str:
        return " / ".join(f"{r[key]:.0f}" for r in rounds)

    med = {k: statistics.median(r[k] for r in rounds) for k in ("health", "single", "batch")}
    lost = result["ingestion"]["distinct"] - result["ingestion"]["stored"]
    fire = result["firing"]
    handed = fire.get("handed_s", float("inf"))
    states = fire.get("states", {})
    ingest_met = "met" if med["single"] >= 500 and lost == 0 else "not met"
    lines = [
        f"`bench/nudge_bench.py`: PostgreSQL, the console and the scheduler as their own processes on the same 2 "
        f"cores as the load generator ({machine_line()}).",
        "",
        f"**Ingestion**: `POST /api/events` from {CONCURRENCY} concurrent clients, one event per request (a tenth "
        "repeats earlier ids), in rounds interleaved with `GET /health` under the same load as the baseline, and "
        "the batch form (100 events per request). Medians of the rounds.",
        "",
        "| measure | median | per round |",
        "| --- | ---: | --- |",
        f"| events/s, one per request | {med['single']:.0f} | {per_round('single')} |",
        f"| events/s, 100 per request | {med['batch']:.0f} | {per_round('batch')} |",
        f"| baseline `GET /health` requests/s | {med['health']:.0f} | {per_round('health')} |",
        f"| one event per request / baseline | {med['single'] / med['health']:.2f}× | |",
        f"| distinct ids sent / stored (lost) | {result['ingestion']['distinct']:,} / "
        f"{result['ingestion']['stored']:,} ({lost}) | |",
        "",
        f"**Cart rule firing**: {result['customers']:,} customers with an open 微信客服 window check out at once "
        "(posted in batches of 1,000, all due at once); the running scheduler's leader schedules and decides them. "
        "Handed over: from the last event accepted until every nudge is decided and every treatment message is "
        "an outbox row.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| posting the {result['customers']:,} events (s) | {fire.get('post_s', float('nan')):.1f} |",
        f"| handed to the outbox (s after the last event accepted) | {handed:.1f} |",
        f"| sent / holdout / other | {states.get('sent', 0):,} / {states.get('holdout', 0):,} / "
        f"{sum(v for k, v in states.items() if k not in ('sent', 'holdout')):,} |",
        f"| outbox rows | {fire.get('outbox', 0):,} |",
        "",
        f"Targets: ingestion >= 500 events/s sustained with nothing lost: **{ingest_met}** "
        f"({med['single']:.0f}/s one per request, {lost} lost); firing handed to the outbox within 30 s: "
        f"**{'met' if handed < 30 else 'not met'}** ({handed:.1f} s).",
    ]
    return "\n".join(lines)


async def run(args) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="siyu-nudge-bench-"))
    try:
        with throwaway_pg_database(PG_ADMIN_URL, "siyu_nudge_bench") as url:
            result = await measure(args, url, workdir)
        text = report(result)
        print(text)
        if not args.no_write:
            write_section("nudges", "## Nudges: events in, a cart rule for 10,000 customers (PostgreSQL)\n\n" + text)
        return 0
    finally:
        if args.keep:
            print(f"[bench] logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="seconds of single-event load per round")
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
