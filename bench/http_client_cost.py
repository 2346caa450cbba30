"""CPU per request of the gateway's HTTP client (channels/wechat/http_client.py) against aiohttp's
ClientSession, the client it replaced: the same small JSON POST with a query string (a kf/send_msg
as the gateway sends it), one at a time over a kept-alive connection, on uvloop like the gateway,
to an aiohttp server in another process (its CPU is not counted). The two clients alternate,
`--rounds` times each. Printed: µs of this process's CPU and of wall time per request.

A diagnostic, not a target: its figures go into the hand-written sections of docs/BENCHMARKS.md.

    .venv/bin/python bench/http_client_cost.py [--requests 3000] [--rounds 2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BODY = {"touser": "wmBench", "open_kfid": "wkBench", "msgid": "bench0001", "msgtype": "text",
        "text": {"content": "亲，您的订单已发货，预计明天送达，请注意查收。"}}
SERVER = """
import sys
from aiohttp import web
async def send(request):
    await request.read()
    return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": "bench0001"})
app = web.Application()
app.router.add_post("/cgi-bin/kf/send_msg", send)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def aiohttp_client(url: str, requests: int):
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async def one() -> None:
            data = json.dumps(BODY, ensure_ascii=False).encode()
            async with session.post(url, params={"access_token": "T" * 64}, data=data,
                                    headers={"Content-Type": "application/json"}) as resp:
                json.loads(await resp.text())
        return await _timed(one, requests)


async def keepalive_client(url: str, requests: int):
    from channels.wechat.http_client import KeepAliveClient

    client = KeepAliveClient(timeout_s=5)

    async def one() -> None:
        data = json.dumps(BODY, ensure_ascii=False).encode()
        resp = await client.request("POST", url, params={"access_token": "T" * 64}, body=data,
                                    headers={"Content-Type": "application/json"})
        json.loads(resp.text())
    try:
        return await _timed(one, requests)
    finally:
        await client.close()


async def _timed(one, requests: int):
    for _ in range(100):  # connection made, code warm
        await one()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        await one()
    return (time.process_time() - cpu) / requests * 1e6, (time.perf_counter() - wall) / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import uvloop

    from tests.support import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        url = f"http://127.0.0.1:{port}/cgi-bin/kf/send_msg"
        deadline = time.monotonic() + 20
        while True:
            try:
                asyncio.run(asyncio.open_connection("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        uvloop.install()
        for _ in range(args.rounds):
            for name, client in (("aiohttp ClientSession", aiohttp_client), ("KeepAliveClient", keepalive_client)):
                cpu, wall = asyncio.run(client(url, args.requests))
                print(f"{name:22} {cpu:6.0f} µs CPU per request, {wall:6.0f} µs wall")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
