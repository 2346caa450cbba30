"""The outbox sender: a background task of the WeChat gateway process. It wakes
when this process enqueues something and polls for rows other processes enqueued; rows to
different recipients are sent concurrently, rows to one recipient strictly in order."""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from sqlalchemy.exc import IntegrityError

from channels.wechat import db, outbox
from channels.wechat.api import PlatformClient
from channels.wechat.delivery import Outcome, deliver, enqueue_and_reserve, reserve_windows

logger = logging.getLogger("channels.wechat.worker")
MAINTENANCE_EVERY_S = 30.0


def worker_name() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class OutboxWorker:
    def __init__(self, client: PlatformClient, max_attempts: int = 8, poll_s: float = 0.5,
                 concurrency: int = 32) -> None:
        self.client = client
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.concurrency = concurrency
        self.name = worker_name()
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task] = None
        self._stopping = False
        self.sent = 0
        self._settling: List[Tuple[List[outbox.Settlement], asyncio.Future]] = []
        self._settler: Optional[asyncio.Future] = None
        self._settling_alone: Set[asyncio.Task] = set()
        self._riding: Set[asyncio.Future] = set()  # settles riding on the next transaction (db.ride)

    def wake(self) -> None:
        self._wake.set()

    async def send_now(self, messages: Sequence[outbox.OutgoingMessage],
                       together_with: Sequence[Tuple[Any, Dict[str, Any]]] = ()) -> None:
        """Queue messages (committed with `together_with`) and send those that may go at once right
        here, without waiting for a claim cycle: queueing, claiming and taking the window places is
        one transaction, and the outcomes are recorded together with other sends that end meanwhile.
        Raises only if nothing was queued; after that, a failure is the outbox's to recover."""
        try:
            rows, refusals, held_back = await db.run(enqueue_and_reserve, messages, outbox.claim_id(self.name),
                                                     together_with)
        except IntegrityError:
            # queued before (a message answered again after a crash): the outbox keeps one of each
            await outbox.enqueue(messages, together_with)
            self.wake()
            return
        try:
            outcomes = await asyncio.gather(*(self._deliver(row, refusal) for row, refusal in zip(rows, refusals)))
            settlements = [self._settlement(row, outcome) for row, outcome in zip(rows, outcomes)]
            riding = outbox.ride_sent(settlements)
            if riding is not None:
                # recorded with the gateway's next transaction; the caller does not wait for it
                self._riding.add(riding)
                riding.add_done_callback(functools.partial(self._ridden, settlements, held_back))
                return
            await self._settle(settlements)
        except Exception:  # noqa: BLE001 - rows left "sending" are recovered after their lease
            logger.exception("outbox direct send failed", extra={"outbox_ids": [row.id for row in rows]})
        if held_back:
            # the rest follow through the claim cycle, now that the first ones are settled; a row
            # held back behind an earlier reply whose settle is still riding waits for that commit
            self.wake()
            if self._riding:
                asyncio.gather(*self._riding, return_exceptions=True).add_done_callback(lambda _: self.wake())

    def _ridden(self, settlements: List[outbox.Settlement], held_back: bool, riding: "asyncio.Future[None]") -> None:
        self._riding.discard(riding)
        if not riding.cancelled() and riding.exception() is not None:
            # its carriers failed: recorded on its own (and if that fails too, the lease recovers it)
            task = asyncio.ensure_future(self._settle_alone(settlements, held_back))
            self._settling_alone.add(task)
            task.add_done_callback(self._settling_alone.discard)
        elif held_back:
            self.wake()

    async def _settle_alone(self, settlements: List[outbox.Settlement], held_back: bool) -> None:
        try:
            await self._settle(settlements)
        except Exception:  # noqa: BLE001 - rows left "sending" are recovered after their lease
            logger.exception("outbox settle failed", extra={"outbox_ids": [s.row.id for s in settlements]})
        if held_back:
            self.wake()

    async def _settle(self, settlements: List[outbox.Settlement]) -> None:
        """Record outcomes (outbox.settle_many) by group commit: those of the claim cycle and of direct
        sends arriving while one transaction records others go into the next."""
        if not settlements:
            return
        done = asyncio.get_running_loop().create_future()
        self._settling.append((settlements, done))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.ensure_future(self._settle_pending())
        await done

    async def _settle_pending(self) -> None:
        while self._settling:
            batch, self._settling = self._settling, []
            try:
                await outbox.settle_many([s for settlements, _ in batch for s in settlements])
            except Exception as exc:  # noqa: BLE001 - each waiter learns it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="wechat-outbox")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except asyncio.TimeoutError:
                self._task.cancel()
            self._task = None
        # the sends' outcomes still waiting to be recorded
        await db.flush_riders()
        if self._settling_alone:
            await asyncio.wait(list(self._settling_alone), timeout=10)

    async def _run(self) -> None:
        logger.info("outbox worker started", extra={"worker": self.name})
        last_maintenance = 0.0
        while not self._stopping:
            # cleared before looking, so a wake-up during the batch is not lost
            self._wake.clear()
            try:
                if time.monotonic() - last_maintenance > MAINTENANCE_EVERY_S:
                    last_maintenance = time.monotonic()
                    await outbox.recover_interrupted()
                if await self.run_once():
                    continue  # more rows are due
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a database hiccup must not end the sender
                logger.exception("outbox worker cycle failed")
                await asyncio.sleep(1.0)
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except asyncio.TimeoutError:
                pass
        logger.info("outbox worker stopped", extra={"worker": self.name, "sent": self.sent})

    async def run_once(self) -> bool:
        """Claim and send one batch (the outcomes recorded in one transaction); whether more rows are
        due (e.g. a reply's second message, claimable once the first is settled)."""
        rows, more = await outbox.claim(self.name, limit=self.concurrency)
        if rows:
            # the batch's reply-window reservations in one transaction
            refusals = await reserve_windows(rows)
            outcomes = await asyncio.gather(*(self._deliver(row, refusal) for row, refusal in zip(rows, refusals)))
            await self._settle([self._settlement(row, outcome) for row, outcome in zip(rows, outcomes)])
        return more

    async def _deliver(self, row, refusal: Optional[str]) -> Outcome:
        try:
            return await deliver(self.client, row, refusal)
        except Exception as exc:  # noqa: BLE001 - e.g. the database failed mid-delivery
            logger.exception("outbox delivery crashed", extra={"outbox_id": row.id})
            return Outcome("retry", error=f"internal error: {type(exc).__name__}")

    def _settlement(self, row, outcome: Outcome) -> outbox.Settlement:
        log = {"outbox_id": row.id, "channel": row.channel, "attempt": row.attempts, "errcode": outcome.errcode}
        if outcome.status == "sent":
            self.sent += 1
            logger.info("wechat message sent", extra=log)
            return outbox.Settlement(row, "sent", platform_msgid=outcome.platform_msgid)
        if outcome.status == "defer":
            logger.info("wechat message deferred", extra=dict(log, reason=outcome.error,
                                                               retry_in_s=round(outcome.retry_in_s or 0, 1)))
            return outbox.Settlement(row, "retry", outcome.errcode, outcome.error, retry_in_s=outcome.retry_in_s,
                                     count_attempt=False)
        if outcome.status == "retry" and row.attempts < self.max_attempts:
            delay = outbox.backoff_s(row.attempts)
            logger.warning("wechat message will be retried", extra=dict(log, error=outcome.error,
                                                                        retry_in_s=round(delay, 1)))
            return outbox.Settlement(row, "retry", outcome.errcode, outcome.error, retry_in_s=delay)
        status = "failed" if outcome.status == "retry" else outcome.status
        logger.error("wechat message not sent", extra=dict(log, status=status, reason=outcome.error))
        return outbox.Settlement(row, status, outcome.errcode, outcome.error)
