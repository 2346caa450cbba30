"""The WeChat services of the gateway process (channels/wechat/gateway.py): configuration, API
client, token cache, inbox, outbox worker, the client of the Rasa server's relay, the message
pipeline and its background tasks. The connectors (one per platform entry point) share it; it
starts with the gateway's Sanic server and stops with it."""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any, Awaitable, Callable, Coroutine, Dict, List, Optional, Sequence, Set, Tuple

from sqlalchemy.ext.asyncio import AsyncSession

from bot.settings import get_settings
from channels.wechat import workers
from channels.wechat.config import WeChatConfig
from channels.wechat.conversation.pipeline import Pipeline, user_wrote
from channels.wechat.conversation.relay_client import RelayClient
from channels.wechat.inbound import replays
from channels.wechat.inbound.inbox import Inbox, RedisDedup
from channels.wechat.outbound.platform import PlatformClient
from channels.wechat.outbound.tokens import MemoryTokenCache, RedisTokenCache
from channels.wechat.outbound.worker import OutboxWorker

logger = logging.getLogger("channels.wechat")
# how often unanswered inbox rows are looked for (claims of a gateway that died are taken over
# once it looks stale: a crashed gateway's messages are answered within ~STALE_AFTER + this)
SWEEP_EVERY_S = 5.0
# how often old rows (answered messages, expired nonces, workers long gone) are deleted
PRUNE_EVERY_S = 30.0
# Rasa handles one conversation at a time (lock store); this bounds how many run at once per process
MAX_CONCURRENT_MESSAGES = 64


class WeChatRuntime:
    def __init__(self, config: Optional[WeChatConfig] = None, redis_prefix: str = "siyu:") -> None:
        settings = get_settings()
        self.config = config or WeChatConfig.from_settings(settings)
        self.redis = None
        if settings.redis_url:
            import redis.asyncio as aioredis

            self.redis = aioredis.from_url(settings.redis_url, socket_timeout=3, socket_connect_timeout=3)
            tokens = RedisTokenCache(self.redis, redis_prefix)
            dedup: Optional[RedisDedup] = RedisDedup(self.redis, self.config.dedup_ttl_s, redis_prefix)
        else:
            tokens, dedup = MemoryTokenCache(), None
        self.tokens = tokens
        self.client = PlatformClient(self.config, tokens)
        self.inbox = Inbox(dedup)
        self.worker = OutboxWorker(self.client, self.config.outbox_max_attempts, self.config.outbox_poll_s)
        self.relay = RelayClient(settings)
        self.pipeline = Pipeline(self)
        self.group_messages = self._group_messages()
        self._tasks: Set[asyncio.Task] = set()
        self._slots: Optional[asyncio.Semaphore] = None
        self._kf_locks: Dict[str, asyncio.Lock] = {}
        self._kf_sync_states: Dict[str, Dict[str, Any]] = {}
        # last kf/sync_msg cursor per account (also in the database, which a restart reads)
        self.kf_cursors: Dict[str, str] = {}
        self._conversation_locks: Dict[str, list] = {}
        # inbox rows a task of this process is answering (or queued to): claims the sweeper leaves alone
        self._working: Set[int] = set()
        self.heartbeat = workers.Heartbeat(self.worker.name)
        self._sweeper: Optional[asyncio.Task] = None
        self._stopping = asyncio.Event()
        self.started = False

    def _group_messages(self):
        """What happens to every group message besides the bot's answers (community SOP)."""
        if not self.config.group.callback:
            return None
        from community_sop.group_messages import GroupMessages

        return GroupMessages(self)

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        self._stopping.clear()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_MESSAGES)
        self.config.report()
        if not self.config.any_configured():
            # the connectors answer 503; nothing to send or sweep
            return
        await self.heartbeat.start()
        self.worker.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="wechat-sweeper")

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        self._stopping.set()
        if self._sweeper:
            # the sweep under way finishes (cancelled inside a database call, it could leave its
            # connection checked out)
            try:
                await asyncio.wait_for(self._sweeper, 10)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - cancelled by wait_for, or it failed
                pass
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            # messages in flight finish (or stay in the inbox for the next start)
            await asyncio.wait(pending, timeout=10)
        try:
            await self.inbox.release_claims(self.worker.name)
        except Exception:  # noqa: BLE001 - taken over once this worker looks stale
            logger.exception("wechat inbox claims not released")
        await self.heartbeat.stop()
        await self.worker.stop()
        await self.client.close()
        await self.relay.close()
        if self.redis is not None:
            await self.redis.close()

    # --- background work ------------------------------------------------------------------------------
    def spawn(self, coro: Coroutine) -> asyncio.Task:
        """Background work that waits for one of the message slots."""
        return self.spawn_tracked(self._bounded(coro))

    async def _bounded(self, coro: Coroutine) -> None:
        assert self._slots is not None
        async with self._slots:
            try:
                await coro
            except Exception:  # noqa: BLE001 - logged; the inbox keeps the message for the sweeper
                logger.exception("wechat background task failed")

    def spawn_tracked(self, coro: Coroutine) -> asyncio.Task:
        """A task that must run to its end (not bounded by the message slots); shutdown waits for it."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def take_in(self, items: Sequence[Tuple[Any, str]],
                      also: Optional[Callable[[AsyncSession], Awaitable[Any]]] = None,
                      pulled: bool = False) -> List[int]:
        """Store (message, conversation id) pairs to answer, claimed by this process, with their
        reply windows opened and their customers looked up in the same transaction (and `also`,
        e.g. saving a 微信客服 page's cursor); then answer each new one in the background. The new
        rows' ids once committed. `pulled`: see Inbox.accept."""

        async def prepare(s: AsyncSession, ids: List[Optional[int]]) -> List[Optional[int]]:
            customers = [await user_wrote(s, message) if row_id is not None else None
                         for (message, _), row_id in zip(items, ids)]
            if also is not None:
                await also(s)
            return customers

        ids, customers = await self.inbox.accept(items, claimed_by=self.worker.name, also=prepare, pulled=pulled)
        accepted = []
        for (message, conversation), row_id, customer_id in zip(items, ids, customers):
            if row_id is not None:
                accepted.append(row_id)
                self.process(row_id, conversation, message, customer_id)
        return accepted

    def process(self, row_id: int, conversation_id: str, message=None, customer_id: Optional[int] = None) -> None:
        """Answer an inbox row in the background; one conversation's messages strictly in arrival order.
        `message`: the row was stored already claimed by this worker (see Pipeline.process)."""
        self._working.add(row_id)
        task = self.spawn_tracked(self._in_order(conversation_id, self.pipeline.process(row_id, message, customer_id)))
        task.add_done_callback(lambda _task: self._working.discard(row_id))

    async def _in_order(self, conversation_id: str, coro: Coroutine) -> None:
        # the conversation lock is taken first thing (asyncio locks are FIFO), so tasks queue in the
        # order they were created, whatever the database does to their timing afterwards
        lock = self._conversation_locks.setdefault(conversation_id, [asyncio.Lock(), 0])
        lock[1] += 1
        try:
            async with lock[0]:
                await self._bounded(coro)
        finally:
            lock[1] -= 1
            if lock[1] == 0:
                self._conversation_locks.pop(conversation_id, None)

    def kf_lock(self, open_kfid: str) -> asyncio.Lock:
        return self._kf_locks.setdefault(open_kfid, asyncio.Lock())

    def kf_sync_state(self, open_kfid: str) -> Dict[str, Any]:
        return self._kf_sync_states.setdefault(open_kfid, {"pending": False, "token": None, "pulled_at": None})

    async def _sweep_forever(self) -> None:
        from channels.wechat.inbound import kf

        first = True
        pruned_at = None
        loop = asyncio.get_running_loop()
        while self.started:
            try:
                if first and self.config.kf:
                    # messages that arrived while the bot was down: the platform does not call back for them
                    await kf.sync_known_accounts(self)
                for row_id, conversation in await self.inbox.missed(self.worker.name, self._working):
                    if row_id not in self._working:
                        self.process(row_id, conversation)
                if pruned_at is None or loop.time() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = loop.time()
                    await self.inbox.prune(timedelta(seconds=self.config.dedup_ttl_s))
                    await replays.prune()
                    await workers.prune()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                logger.exception("wechat sweep failed")
            first = False
            try:
                await asyncio.wait_for(self._stopping.wait(), SWEEP_EVERY_S)
            except asyncio.TimeoutError:
                pass


def _log_failure(task: asyncio.Task) -> None:
    # also when nobody waits for the task any more (the callback was already answered 503)
    if not task.cancelled() and task.exception() is not None:
        logger.error("wechat background work failed", exc_info=task.exception())


_runtime: Optional[WeChatRuntime] = None


def get_runtime() -> WeChatRuntime:
    global _runtime
    if _runtime is None:
        _runtime = WeChatRuntime()
    return _runtime
