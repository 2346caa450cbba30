"""Rasa's stores as configured by the settings: SQL tracker store on SQLite/PostgreSQL, and the
Redis lock store when REDIS_URL is set."""
from __future__ import annotations

from rasa.core.lock_store import InMemoryLockStore, RedisLockStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bot.settings import reset_settings_cache
from bot.stores import SiyuLockStore, SiyuTrackerStore


async def test_tracker_store_saves_and_restores_conversations(shop_db):
    domain = Domain.from_directory("bot/domain")
    store = SiyuTrackerStore(domain=domain)
    tracker = DialogueStateTracker.from_events("im:store-test", [
        ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen"),
        UserUttered("你好", {"name": "greet", "confidence": 1.0})], domain.slots)
    await store.save(tracker)
    tracker.update(ActionExecuted("utter_greet"))
    await store.save(tracker)
    restored = await store.retrieve("im:store-test")
    assert [e.as_dict()["event"] for e in restored.events][-2:] == ["user", "action"]
    assert restored.latest_message.text == "你好"
    assert "im:store-test" in await store.keys()
    store.engine.dispose()


async def test_tracker_store_on_a_new_sqlite_file_makes_its_folder(tmp_path, monkeypatch):
    """A first start with DATABASE_URL pointing into a folder that does not exist yet."""
    database = tmp_path / "var" / "new" / "shop.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    reset_settings_cache()
    try:
        domain = Domain.from_directory("bot/domain")
        store = SiyuTrackerStore(domain=domain)
        await store.save(DialogueStateTracker.from_events("im:new-folder", [
            ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen")], domain.slots))
        assert database.is_file()
        assert "im:new-folder" in await store.keys()
        store.engine.dispose()
    finally:
        monkeypatch.delenv("DATABASE_URL")
        reset_settings_cache()


def test_lock_store_is_in_memory_without_redis(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    reset_settings_cache()
    assert isinstance(SiyuLockStore(), InMemoryLockStore)


async def test_lock_store_is_redis_with_redis_url(redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    reset_settings_cache()
    try:
        store = SiyuLockStore()
        assert isinstance(store, RedisLockStore)
        async with store.lock("im:lock-test"):
            assert store.get_lock("im:lock-test") is not None
        assert store.get_lock("im:lock-test") is None or not store.get_lock("im:lock-test").is_locked(0)
    finally:
        monkeypatch.delenv("REDIS_URL")
        reset_settings_cache()


def test_two_workers_never_draw_the_same_ticket_for_one_conversation(redis_url, monkeypatch):
    """Each Rasa worker has its own lock store; they draw tickets for one conversation at the same
    time (the first messages of a new customer landing on both). Every ticket is drawn once, so
    only one worker at a time answers the conversation."""
    import threading
    import uuid

    monkeypatch.setenv("REDIS_URL", redis_url)
    reset_settings_cache()
    try:
        workers = [SiyuLockStore(), SiyuLockStore()]
        conversation = f"im:race-{uuid.uuid4().hex[:8]}"
        tickets, start = [], threading.Barrier(16)

        def draw(store):
            start.wait()
            for _ in range(5):
                tickets.append(store.issue_ticket(conversation))

        threads = [threading.Thread(target=draw, args=(workers[n % 2],)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(tickets) == list(range(80))
        for ticket in range(80):
            workers[ticket % 2].cleanup(conversation, ticket)
        assert workers[0].get_lock(conversation) is None, "the lock is gone once every ticket is served"
    finally:
        monkeypatch.delenv("REDIS_URL")
        reset_settings_cache()
