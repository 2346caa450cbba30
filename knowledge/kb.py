"""The long-lived knowledge base object of the action server.

It keeps one loaded index, checks at most every ``refresh_seconds`` whether a newer build was
published (one small file read) and swaps it in atomically, so an import picks up without restarting
the bot. Loading runs in a worker thread so the event loop keeps serving other conversations; until
the new index is loaded, the old one answers.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from .decision import DECLINE, EMPTY, NO_INDEX, Decision, decide
from .guard import asks_database_fact
from .index import Hit, KnowledgeIndex
from .publish import current_build, current_version
from .query import has_content
from .text import base_dictionary, compact

logger = logging.getLogger(__name__)


def shop_now() -> datetime:
    """Naive local time of the shop (valid_from / valid_to are written in the shop's time zone)."""
    try:
        from zoneinfo import ZoneInfo

        from bot.settings import get_settings

        return datetime.now(ZoneInfo(get_settings().shop.timezone)).replace(tzinfo=None)
    except Exception:  # settings unavailable (file-only CLI use outside the repo): local time
        return datetime.now()


def limit_query_threads() -> None:
    """One thread for BLAS (the sentence encoder) and OpenMP (faiss) in the serving process.

    A single query gains nothing from threads, but waking and synchronising them costs: measured on
    the 10k-entry bench, p99 fell from ~60-80 ms to ~12 ms with one thread. Process-wide on purpose:
    the action server does no other numeric work; builds (CLI) keep all cores.
    """
    try:
        import faiss
        from threadpoolctl import threadpool_limits

        faiss.omp_set_num_threads(1)
        threadpool_limits(1)
    except Exception:  # optional optimisation only
        logger.debug("could not limit query threads", exc_info=True)


class KnowledgeBase:
    def __init__(self, index_dir: Path, refresh_seconds: float = 3.0,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = shop_now,
                 single_thread: bool = True) -> None:
        if single_thread:
            limit_query_threads()
        # jieba's base dictionary is parsed in one GIL-holding call (~0.4 s): do it now, at start-up,
        # rather than inside the first reload where it would stall the event loop
        base_dictionary()
        self.index_dir = Path(index_dir)
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._now = now
        self._loaded: Optional[Tuple[str, KnowledgeIndex]] = None  # (version, index), swapped as one
        self._checked_at = float("-inf")
        self._lock = threading.Lock()
        self._reload_task: Optional[asyncio.Task] = None

    @classmethod
    def from_settings(cls, settings=None) -> "KnowledgeBase":
        from bot.settings import get_settings

        settings = settings or get_settings()
        return cls(settings.knowledge_index_dir, settings.knowledge_refresh_seconds)

    # --- loading -------------------------------------------------------------------------------
    @property
    def version(self) -> Optional[str]:
        return self._loaded[0] if self._loaded else None

    @property
    def index(self) -> Optional[KnowledgeIndex]:
        return self._loaded[1] if self._loaded else None

    def _due(self) -> bool:
        now = self._clock()
        if now - self._checked_at < self.refresh_seconds:
            return False
        self._checked_at = now
        return True

    def _load(self, version: str) -> None:
        with self._lock:
            if self._loaded and self._loaded[0] == version:
                return
            build = current_build(self.index_dir)
            if build is None or build.name != version:
                return  # replaced again meanwhile: the next check loads the newest
            started = time.perf_counter()
            index = KnowledgeIndex.load(build)
            self._loaded = (version, index)
            logger.info("knowledge index %s loaded: %d entries in %.2fs", version, len(index),
                        time.perf_counter() - started)

    def refresh(self, force: bool = False) -> bool:
        """Blocking check-and-load (CLI, tests). True when a new index was loaded."""
        if not force and not self._due():
            return False
        version = current_version(self.index_dir)
        if version is None or version == self.version:
            return False
        before = self.version
        try:
            self._load(version)
        except Exception:
            logger.exception("could not load knowledge index %s; keeping %s", version, before)
            return False
        return self.version != before

    async def arefresh(self, force: bool = False) -> bool:
        """Non-blocking: the check is one small read; the load runs in a thread. Without a loaded
        index this waits for the load; otherwise the old index keeps answering meanwhile."""
        if not force and not self._due():
            return False
        version = current_version(self.index_dir)
        if version is None or version == self.version:
            return False
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.ensure_future(asyncio.to_thread(self._safe_load, version))
        if self._loaded is None or force:
            await self._reload_task
        return self.version == version

    def _safe_load(self, version: str) -> None:
        try:
            self._load(version)
        except Exception:
            logger.exception("could not load knowledge index %s; keeping %s", version, self.version)

    # --- querying ------------------------------------------------------------------------------
    def search(self, text: str, k: int = 5, now: Optional[datetime] = None) -> List[Hit]:
        self.refresh()
        index = self.index
        return index.search(text, k=k, now=now or self._now()) if index else []

    def decide(self, text: str, now: Optional[datetime] = None) -> Decision:
        self.refresh()
        return self._decide(text, now)

    async def adecide(self, text: str, now: Optional[datetime] = None) -> Decision:
        """What the Rasa action calls. Searching takes a few milliseconds of CPU and runs inline."""
        await self.arefresh()
        return self._decide(text, now)

    def _decide(self, text: str, now: Optional[datetime]) -> Decision:
        loaded = self._loaded
        if not compact(text):
            return Decision(DECLINE, EMPTY, query=text)
        if loaded is None:
            return Decision(DECLINE, NO_INDEX, query=text, escalate=True)
        version, index = loaded
        if (index.config.get("query_variants") or "off") != "off" and not has_content(text):
            return Decision(DECLINE, EMPTY, query=text)  # "在吗" / "好的谢谢": nothing to look up
        fact = asks_database_fact(text)
        when = now or self._now()
        hits = [] if fact else index.search(text, k=3, now=when)
        same = None if fact else index.same_question(text, when)
        if same is not None:
            hits = [same] + [h for h in hits if h.entry.id != same.entry.id and not h.exact]
        return decide(text, hits, index.thresholds, fact=fact, index_version=version)
