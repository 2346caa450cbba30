"""Nudges benchmark: the daily RFM segment and health recompute (nudges/segments.py recompute())
over 100,000 customers and 1,000,000 orders, with 20,000 tickets, 80,000 WeChat identities and
200,000 inbound messages of the last 60 days (half of them inside the 30-day sentiment window).

The shop is generated into a fresh PostgreSQL database (created and dropped here; loaded with
COPY), or a SQLite file with --sqlite, and migrated like the product's. The recompute runs three
times in a row (the first inserts every customer's row, the next ones update them); the figure is
the median wall time, with its phases (reading and aggregating in SQL, computing in Python,
writing). While it runs, a 10 ms ticker on the same event loop records the longest stall.

Target: under 60 s on PostgreSQL.

    .venv/bin/python bench/nudge_segments_bench.py [--sqlite] [--customers 100000] [--orders 1000000] [--no-write]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.report import write_section  # noqa: E402
from tests.support import throwaway_pg_database  # noqa: E402

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 12, 1, 4, 0, 0)
RUNS = 3
STATUSES = ["completed"] * 60 + ["delivered"] * 10 + ["shipped"] * 5 + ["paid"] * 5 + ["cancelled"] * 8 + \
    ["refunded"] * 5 + ["refunding"] * 2 + ["pending_payment"] * 5
PAID = {"completed", "delivered", "shipped", "paid"}
TICKET_KINDS = ["return", "refund", "exchange", "complaint", "human_request", "change_order"]
TICKET_STATUSES = ["open", "processing", "resolved", "resolved", "closed"]
TEXTS = ["在吗", "我的快递到哪了", "这个有货吗", "谢谢，质量很好，非常满意", "好评，下次还来", "东西收到了，挺好",
         "太差了，我要投诉", "等了好久还没到，什么态度", "客服一直不处理，失望", "有优惠券吗", "不用投诉了，已经解决",
         "颜色不喜欢，能换吗"]


def use_database(url: str) -> None:
    from bot.settings import reset_settings_cache

    os.environ["DATABASE_URL"] = url
    reset_settings_cache()


def migrate(url: str) -> None:
    from actions.db.migrate import upgrade

    use_database(url)
    upgrade()


def generate(customers: int, orders: int, seed: int = 7) -> Dict[str, Tuple[List[str], List[tuple]]]:
    """The shop's rows per table: (columns, rows), ids from 1."""
    rng = random.Random(seed)
    created = NOW - timedelta(days=900)
    shop: Dict[str, Tuple[List[str], List[tuple]]] = {}
    shop["customers"] = (["id", "external_id", "name", "level", "points", "marketing_opt_out",
                          "transactional_opt_out", "tags", "created_at"],
                         [(i, f"C{i:07d}", f"顾客{i}", "普通会员", 0, False, False, "[]", created)
                          for i in range(1, customers + 1)])
    # 15% of the customers never ordered; the others' order counts are skewed (a few order often)
    buyers = list(range(1, customers + 1))
    rng.shuffle(buyers)
    buyers = buyers[: int(customers * 0.85)]
    weights = [rng.paretovariate(1.5) for _ in buyers]
    picks = rng.choices(buyers, weights=weights, k=orders - len(buyers))
    picks.extend(buyers)  # every buyer has at least one order (of any status)
    rows = []
    for n, cid in enumerate(picks, start=1):
        status = rng.choice(STATUSES)
        at = NOW - timedelta(seconds=rng.randrange(730 * 86400))
        total = rng.randrange(2000, 100000)
        paid_fen = 0 if status not in PAID or rng.random() < 0.1 else total - rng.randrange(0, 1000)
        paid_at = at + timedelta(minutes=3) if status in PAID | {"refunded", "refunding"} and rng.random() > 0.05 \
            else None
        rows.append((n, f"SY{n:010d}", cid, status, total, paid_fen, "张三", "13800000000", "上海市浦东新区",
                     at, paid_at, at))
    shop["orders"] = (["id", "order_no", "customer_id", "status", "total_fen", "paid_fen", "receiver_name",
                       "receiver_phone", "address", "created_at", "paid_at", "updated_at"], rows)
    people = rng.sample(range(1, customers + 1), min(customers, 80_000))
    identities = [(n, cid, "wecom_kf" if n % 4 else "mp", f"wm{cid}", created) for n, cid in enumerate(people, 1)]
    shop["customer_identities"] = (["id", "customer_id", "channel", "external_id", "created_at"], identities)
    tickets = []
    for n in range(1, customers // 5 + 1):
        at = NOW - timedelta(seconds=rng.randrange(90 * 86400))
        tickets.append((n, f"T{n:09d}", rng.choice(TICKET_KINDS), rng.choice(TICKET_STATUSES),
                        rng.randrange(1, customers + 1), "", "", "", at, at))
    shop["tickets"] = (["id", "ticket_no", "kind", "status", "customer_id", "reason", "detail", "resolution",
                        "created_at", "updated_at"], tickets)
    messages = []
    for n in range(1, customers * 2 + 1):
        _, cid, channel, external, _ = identities[rng.randrange(len(identities))]
        at = NOW - timedelta(seconds=rng.randrange(60 * 86400))
        payload = {"channel": channel, "user_id": external, "dedup_key": f"m{n}", "msg_type": "text",
                   "sent_at": int(at.timestamp()), "account": "", "text": rng.choice(TEXTS), "event": None, "extra": {}}
        messages.append((n, channel, f"m{n}", f"{channel}:{external}", json.dumps(payload, ensure_ascii=False),
                         "done", 1, at, at))
    shop["wechat_inbound"] = (["id", "channel", "dedup_key", "conversation_id", "payload", "status", "attempts",
                               "received_at", "processed_at"], messages)
    return shop


async def load_postgres(url: str, shop: Dict[str, Tuple[List[str], List[tuple]]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for table, (columns, rows) in shop.items():
            await conn.copy_records_to_table(table, records=rows, columns=columns)
            await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {len(rows) + 1}, false)")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def load_sqlite(path: Path, shop: Dict[str, Tuple[List[str], List[tuple]]]) -> None:
    def value(v: Any) -> Any:
        return v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v

    conn = sqlite3.connect(path)
    try:
        for table, (columns, rows) in shop.items():
            marks = ", ".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                             ([value(v) for v in row] for row in rows))
        conn.commit()
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def run_recomputes() -> List[Dict[str, Any]]:
    from actions.db.engine import dispose_async_engines
    from nudges import segments

    results = []
    for _ in range(RUNS):
        stall = {"max": 0.0}
        stop = asyncio.Event()

        async def ticker() -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                expected = loop.time() + 0.01
                await asyncio.sleep(0.01)
                stall["max"] = max(stall["max"], loop.time() - expected)

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        summary = await segments.recompute(now=NOW)
        wall = time.perf_counter() - started
        stop.set()
        await task
        results.append({"wall": wall, "summary": summary, "stall_ms": stall["max"] * 1000})
        print(f"[bench] recompute {wall:.1f} s, phases {summary['phases']}, longest loop stall "
              f"{stall['max'] * 1000:.0f} ms", flush=True)
    await dispose_async_engines()
    return results


async def check_rows(customers: int) -> int:
    import sqlalchemy as sa

    from actions.db.engine import async_session, dispose_async_engines
    from nudges.models import CustomerSegment

    async with async_session() as s:
        count = (await s.execute(sa.select(sa.func.count()).select_from(CustomerSegment))).scalar_one()
    await dispose_async_engines()
    assert count == customers, (count, customers)
    return count


def report(args, deployment: str, shop: Dict[str, Tuple[List[str], List[tuple]]], load_s: float,
           results: List[Dict[str, Any]]) -> str:
    walls = [r["wall"] for r in results]
    median = statistics.median(walls)
    middle = sorted(results, key=lambda r: r["wall"])[len(results) // 2]
    phases = middle["summary"]["phases"]
    summary = results[-1]["summary"]
    counts = summary["counts"]
    thresholds = summary["thresholds"]
    sizes = {table: len(rows) for table, (_, rows) in shop.items()}
    target = 60.0

    def per_run(phase: str) -> str:
        return " / ".join(f"{r['summary']['phases'][phase]:.1f}" for r in results)

    paid_share = sum(status in PAID for status in STATUSES) / len(STATUSES)
    lines = [
        f"`bench/nudge_segments_bench.py{' --sqlite' if args.sqlite else ''}`: {deployment}, "
        f"{sizes['customers']:,} customers (15% without orders) and {sizes['orders']:,} orders over two years "
        f"({paid_share:.0%} paid, shipped, delivered or completed; the rest pending, cancelled, refunding or "
        "refunded), "
        f"{sizes['tickets']:,} tickets, {sizes['customer_identities']:,} WeChat identities and "
        f"{sizes['wechat_inbound']:,} inbound messages of the last 60 days, loaded with "
        f"{'COPY' if not args.sqlite else 'executemany'} in {load_s:.0f} s. `nudges.segments.recompute()` runs "
        f"{RUNS} times in a row in one process (the first inserts every customer's row, the next ones update "
        "them): aggregates, LAG gaps and their medians in SQL, standings, segments and message sentiment in "
        "Python (a worker thread), upsert of every row and the run's summary in one transaction. A 10 ms ticker "
        "on the same event loop records the longest stall.",
        "",
        "| measure | median | per run | target |",
        "| --- | ---: | --- | --- |",
        f"| recompute, wall (s) | {median:.1f} | {' / '.join(f'{w:.1f}' for w in walls)} | < {target:.0f} s |",
        f"| read and aggregate in SQL (s) | {phases['read']:.1f} | "
        f"{per_run('read')} | |",
        f"| compute in Python (s) | {phases['compute']:.1f} | "
        f"{per_run('compute')} | |",
        f"| write {summary['customers']:,} rows (s) | {phases['write']:.1f} | "
        f"{per_run('write')} | |",
        f"| longest event-loop stall (ms) | {statistics.median(r['stall_ms'] for r in results):.0f} | "
        f"{' / '.join(format(r['stall_ms'], '.0f') for r in results)} | |",
        "",
        f"Shop medians used as thresholds: recency {thresholds['recency_days']} days, frequency "
        f"{thresholds['frequency']} orders, monetary ¥{thresholds['monetary_yuan']:,}. Segments: "
        + ", ".join(f"{name} {n:,}" for name, n in counts.items()) + ".",
        "",
        "Target (\"daily segment and health recompute for 100,000 customers and 1,000,000 orders under 60 s\", "
        + (f"PostgreSQL): **{'met' if max(walls) < target else 'not met'}** (slowest run {max(walls):.1f} s)."
           if not args.sqlite else f"set for PostgreSQL; SQLite for comparison): slowest run {max(walls):.1f} s."),
    ]
    return "\n".join(lines)


async def measure(args, url: str, loader) -> Tuple[float, List[Dict[str, Any]], Dict[str, Any]]:
    migrate(url)
    started = time.perf_counter()
    shop = generate(args.customers, args.orders)
    print(f"[bench] generated in {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    await loader(shop)
    load_s = time.perf_counter() - started
    print(f"[bench] loaded in {load_s:.1f} s", flush=True)
    results = await run_recomputes()
    await check_rows(args.customers)
    return load_s, results, shop


async def run(args) -> int:
    if args.sqlite:
        workdir = Path(tempfile.mkdtemp(prefix="siyu-segments-bench-"))
        try:
            path = workdir / "shop.db"
            load_s, results, shop = await measure(
                args, f"sqlite:///{path}", lambda shop: asyncio.to_thread(load_sqlite, path, shop))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        deployment, section = "SQLite", "nudge-segments-sqlite"
    else:
        with throwaway_pg_database(PG_ADMIN_URL, "siyu_segments_bench") as url:
            load_s, results, shop = await measure(args, url, lambda shop: load_postgres(url, shop))
        deployment, section = "PostgreSQL", "nudge-segments"
    text = report(args, deployment, shop, load_s, results)
    print(text)
    if not args.no_write:
        write_section(section, "## Nudges: daily RFM segments and health, 100,000 customers x 1,000,000 orders"
                      + f" ({deployment})\n\n" + text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="print the section, leave docs/BENCHMARKS.md")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
