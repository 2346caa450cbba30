"""When a callback that carries messages is answered "success".

The platform never delivers an acknowledged callback again, so the ack waits until the messages
are stored: committed, which on PostgreSQL means flushed to disk. On this machine's disk most
flushes take under a millisecond, but some take 20-115 ms with the machine idle
(docs/BENCHMARKS.md, the disk probe), and every commit caught in such a stall waits for it.

So once the COMMIT has gone to the server (db.CommitWatch), the ack waits only `flush_wait_s`
more for it to finish; past that it goes, and the commit finishes behind it. From that moment the
server owns the commit: it completes it even if this process dies, and the WAL record is normally
written to the operating system already, so what could still lose the message is the machine
itself going down during the stall. The embedded SQLite default (WAL, synchronous=NORMAL)
already accepts more than that for every commit.

Bounds: at most `unflushed_max` acknowledged messages at once may still be committing (a server
that stopped answering would otherwise collect every callback in memory); past that, acks wait
for their flush as before. If a commit that was acknowledged fails after all, this process stores
the messages again, with backoff, for up to STORE_AGAIN_FOR_S (the platform will not: it has its
ack); one that still cannot be stored is logged as lost with its channel and dedup key.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, Optional, Set

from channels.wechat.db import CommitWatch
from channels.wechat.payloads import InboundMessage

if TYPE_CHECKING:  # pragma: no cover
    from channels.wechat.runtime import WeChatRuntime

logger = logging.getLogger("channels.wechat")
STORE_AGAIN_FIRST_S = 0.5
STORE_AGAIN_MAX_DELAY_S = 30.0
STORE_AGAIN_FOR_S = 300.0
_STORED, _FLUSHING = "stored", "flushing"

Store = Callable[[List[InboundMessage], Optional[CommitWatch]], Awaitable[Any]]


class Acknowledgement:
    """The ack policy of one gateway process (shared by its connectors: one bound for them all)."""

    def __init__(self, runtime: "WeChatRuntime") -> None:
        self.runtime = runtime
        self.flush_wait_s = runtime.config.ack_flush_wait_s
        self.unflushed_max = runtime.config.ack_unflushed_max
        self.unflushed: Set[asyncio.Task] = set()
        # acks that went before their commit finished, and those whose commit then failed
        self.acked_before_flush = 0
        self.stored_again = 0

    async def stored(self, connector: str, store: Store, messages: List[InboundMessage], budget_s: float) -> None:
        """Returns once the callback may be acknowledged: its messages are stored, or their commit
        is at the server and past the flush wait. Raises asyncio.TimeoutError if neither happened
        within the budget (the platform is then asked to retry), or the store's error.

        Storing is never cancelled half-way: cut off, it could leave the message marked as seen
        (Redis) but not stored, and the platform's retry would then be dropped as a duplicate."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        gate = loop.create_future()
        watch = CommitWatch() if self.unflushed_max > 0 else None
        timer: Optional[asyncio.TimerHandle] = None

        def open_gate(why: str) -> None:
            if not gate.done():
                gate.set_result(why)

        def look() -> None:
            # a timer, not a wake-up from the database thread: a commit that finishes within the
            # wait (nearly all) costs no more than setting and cancelling it
            nonlocal timer
            assert watch is not None
            sent_at = watch.sent_at
            waited = None if sent_at is None else time.monotonic() - sent_at
            if waited is not None and waited >= self.flush_wait_s:
                open_gate(_FLUSHING)
            else:
                timer = loop.call_later(max(self.flush_wait_s - (waited or 0.0), 0.001), look)

        task = self.runtime.spawn_tracked(store(messages, watch))
        task.add_done_callback(lambda _task: open_gate(_STORED))
        if watch is not None:
            timer = loop.call_later(self.flush_wait_s, look)
        try:
            why = await asyncio.wait_for(gate, budget_s)
        finally:
            if timer is not None:
                timer.cancel()
        if why == _FLUSHING and not task.done() and len(self.unflushed) < self.unflushed_max:
            self._acknowledged_unflushed(task, connector, store, messages)
            return
        # stored (its outcome is the ack's), or no room to go ahead of the flush: wait for it
        await asyncio.wait_for(asyncio.shield(task), max(deadline - loop.time(), 0.0))

    def _acknowledged_unflushed(self, task: asyncio.Task, connector: str, store: Store,
                                messages: List[InboundMessage]) -> None:
        self.unflushed.add(task)
        self.acked_before_flush += 1
        logger.info("wechat callback acknowledged while its commit is flushed", extra={
            "connector": connector, "flush_wait_ms": round(self.flush_wait_s * 1000, 1),
            "unflushed": len(self.unflushed)})

        def settled(done: asyncio.Task) -> None:
            self.unflushed.discard(done)
            if done.cancelled() or done.exception() is not None:
                self.stored_again += 1
                logger.error("an acknowledged callback's commit failed; its messages are stored again",
                             extra={"connector": connector, "keys": _keys(messages)})
                self.runtime.spawn_tracked(self._store_again(connector, store, messages))

        task.add_done_callback(settled)

    async def _store_again(self, connector: str, store: Store, messages: List[InboundMessage]) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + STORE_AGAIN_FOR_S
        delay = STORE_AGAIN_FIRST_S
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    # a commit that did happen after all (its connection was lost while committing)
                    # makes this a duplicate: no task holds that row's claim, so the sweeper hands
                    # it back and answers it (Inbox.missed)
                    await store(messages, None)
                except Exception:  # noqa: BLE001 - tried again until the deadline
                    if loop.time() + delay > give_up_at:
                        logger.exception("acknowledged messages lost: they could not be stored", extra={
                            "connector": connector, "keys": _keys(messages), "for_s": STORE_AGAIN_FOR_S})
                        return
                    logger.warning("acknowledged messages not stored yet; trying again",
                                   extra={"connector": connector, "retry_in_s": delay}, exc_info=True)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, STORE_AGAIN_MAX_DELAY_S)
                    continue
                logger.warning("acknowledged messages stored on a later attempt",
                               extra={"connector": connector, "keys": _keys(messages), "attempt": attempt})
                return
        except asyncio.CancelledError:
            logger.error("acknowledged messages lost: the gateway stopped before they could be stored",
                         extra={"connector": connector, "keys": _keys(messages)})
            raise


def _keys(messages: List[InboundMessage]) -> List[str]:
    return [f"{message.channel}:{message.dedup_key}" for message in messages]
