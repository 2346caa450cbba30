"""A small closed-loop HTTP load generator (aiohttp): N concurrent virtual users each send their
next message as soon as the previous reply arrives."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import aiohttp


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: List[float]

    def percentile(self, p: float) -> float:
        data = sorted(self.latencies_ms)
        if not data:
            return float("nan")
        k = min(len(data) - 1, max(0, int(round(p / 100 * (len(data) - 1)))))
        return data[k]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def run_load(url: str, bodies: Callable[[int, int], Dict], concurrency: int, total: int,
                   timeout_s: float = 60.0) -> LoadResult:
    """`bodies(user, i)` gives the JSON body of request i of virtual user `user`."""
    latencies: List[float] = []
    errors = 0
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as http:
        async def user(u: int) -> None:
            nonlocal errors
            i = 0
            for _ in counter:
                body = json.dumps(bodies(u, i))
                i += 1
                start = time.perf_counter()
                try:
                    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                        payload = await resp.read()
                        ok = resp.status == 200 and payload.startswith(b"[") and payload != b"[]"
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                elapsed = (time.perf_counter() - start) * 1000
                if ok:
                    latencies.append(elapsed)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(user(u) for u in range(concurrency)))
        seconds = time.perf_counter() - started
    return LoadResult(concurrency, len(latencies), errors, seconds, latencies)
