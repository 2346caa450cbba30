"""The console's shared queue lists: pages reloading together after a live event share one
computation, and nothing older than the last desk event is served."""
from __future__ import annotations

import asyncio

import pytest

from console.lists import SharedLists


async def test_requests_at_once_share_one_computation_until_the_next_event():
    lists = SharedLists(max_age_s=60)
    computed = 0
    gate = asyncio.Event()

    async def compute():
        nonlocal computed
        computed += 1
        await gate.wait()
        return computed

    waiting = [asyncio.create_task(lists.get("queued", compute)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 10 and computed == 1
    assert await lists.get("queued", compute) == 1  # still current
    lists.invalidate()  # a desk event
    assert await lists.get("queued", compute) == 2 and computed == 2


async def test_a_failed_computation_is_not_shared_with_later_requests():
    lists = SharedLists(max_age_s=60)
    calls = []

    async def compute():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database hiccup")
        return "rows"

    with pytest.raises(RuntimeError):
        await lists.get("queued", compute)
    assert await lists.get("queued", compute) == "rows"


async def test_an_entry_is_not_served_past_its_age():
    lists = SharedLists(max_age_s=0.05)
    values = iter([1, 2])

    async def compute():
        return next(values)

    assert await lists.get("k", compute) == 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while loop.time() < deadline and await lists.get("k", compute) == 1:
        await asyncio.sleep(0.01)
    assert await lists.get("k", compute) == 2
