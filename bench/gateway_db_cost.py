"""The WeChat gateway's database work per message on PostgreSQL, without Rasa, HTTP or the sandbox:
what the gateway does for one Official Account message (store it with its reply window and customer
lookup; queue its reply claimed, with its window place and the message marked answered; settle the
reply as sent, riding on the next transaction where the measured code does that), for `--messages`
messages from `--customers` concurrent customers, on a new database seeded with the demo shop (as
the WeChat benchmark does). Printed: CPU per message of the
PostgreSQL server processes serving the gateway, and of this process (the gateway's side: its
database threads and event loop), and messages per second.

A diagnostic, not a target: its figures go into the hand-written sections of docs/BENCHMARKS.md
with the commit they were measured on. To compare with another commit, measure a worktree of it
(--code), alternating with this checkout's code in the same hour:

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/gateway_db_cost.py [--code /tmp/before] [--messages 6000] [--customers 16]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def server_cpu_s(url: str) -> float:
    """CPU time so far of the server processes of every other connection to the database at `url`."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            pids = [row[0] for row in conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))]
    finally:
        engine.dispose()
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


async def measure(args, url: str) -> None:
    from channels.wechat import db, identity, outbox
    from channels.wechat.delivery import enqueue_and_reserve
    from channels.wechat.inbox import Inbox
    from channels.wechat.output import text_messages
    from channels.wechat.payloads import InboundMessage
    from channels.wechat.pipeline import prepare

    inbox = Inbox()
    rides = []
    users = [f"oBench{n}" for n in range(args.users)]
    for user in users:
        await identity.resolve("mp", user, None)

    async def one(n: int, user: str) -> None:
        message = InboundMessage("mp", user, f"m{n}-{time.time_ns()}", "text", int(time.time()), account="gh_bench",
                                 text="发货了吗")
        (stored,) = await inbox.accept_prepared([(message, f"mp:{user}")], claimed_by="bench", prepare=prepare)
        row_id, prepared = stored
        replies = text_messages(["亲，一般48小时内发货"], channel="mp", recipient=user, key_prefix=f"wxin{row_id}",
                                conversation_id=f"mp:{user}", customer_id=prepared.customer_id)
        rows, _, _ = await db.run(enqueue_and_reserve, replies, outbox.claim_id("bench"),
                                  [Inbox.finish_statement(row_id, "done")])
        settlements = [outbox.Settlement(row, "sent") for row in rows]
        # as the gateway settles a direct send: riding on the next transaction where the code can
        riding = outbox.ride_sent(settlements) if hasattr(outbox, "ride_sent") else None
        if riding is None:
            await outbox.settle_many(settlements)
        else:
            rides.append(riding)

    for n in range(200):  # connections opened, statements prepared (and planned again at 64, 128)
        await one(n, users[n % len(users)])
    per_customer = args.messages // args.customers

    async def customer(k: int) -> None:
        for i in range(per_customer):
            await one(1_000_000 * (k + 1) + i, users[(k + i * args.customers) % len(users)])

    server_before, own_before, started = server_cpu_s(url), os.times(), time.perf_counter()
    await asyncio.gather(*(customer(k) for k in range(args.customers)))
    await asyncio.gather(*rides)
    elapsed, own_after, server_after = time.perf_counter() - started, os.times(), server_cpu_s(url)
    total = per_customer * args.customers
    own = (own_after.user + own_after.system) - (own_before.user + own_before.system)
    print(f"{total} messages, {args.customers} customers at a time: PostgreSQL server "
          f"{(server_after - server_before) / total * 1000:.3f} ms of CPU per message, gateway side "
          f"{own / total * 1000:.3f} ms, {total / elapsed:.0f} messages/s")
    db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--customers", type=int, default=16)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--code", default=str(REPO), help="the checkout whose code is measured (default: this one)")
    args = parser.parse_args()
    sys.path.insert(0, args.code)
    from tests.support import throwaway_pg_database

    with throwaway_pg_database(args.pg, "siyu_gateway_db") as url:
        env = dict(os.environ, DATABASE_URL=url)
        subprocess.run([sys.executable, "-m", "bot", "seed-demo"], cwd=args.code, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        os.environ["DATABASE_URL"] = url
        asyncio.run(measure(args, url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
