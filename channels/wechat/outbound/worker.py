"""The outbox sender: a background task of the WeChat gateway process. It wakes when this process
enqueues something and polls for rows other processes enqueued (the console's staff replies, SOP
posts); rows to different recipients are sent concurrently, rows to one recipient strictly in order.
Each cycle claims a batch, takes the rows' reply-window places, sends them, and records the outcomes
in one transaction."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Optional

from channels.wechat.outbound import outbox
from channels.wechat.outbound.delivery import Outcome, deliver, reserve_windows
from channels.wechat.outbound.platform import PlatformClient

logger = logging.getLogger("channels.wechat.outbound.worker")
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

    def wake(self) -> None:
        """Something was queued: look at once instead of at the next poll."""
        self._wake.set()

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
            await outbox.settle_many([self._settlement(row, outcome) for row, outcome in zip(rows, outcomes)])
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
