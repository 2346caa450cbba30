"""Fixtures of the knowledge-base tests: small FAQ files, built indexes, real databases.

Databases: a temporary SQLite file always; PostgreSQL at postgresql://postgres@127.0.0.1:5432/test
(or KNOWLEDGE_TEST_PG_URL) in a temporary database created and dropped here. Without a reachable
server the PostgreSQL cases skip with the reason, except under CI=true, where they fail.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
from kb_testdata import REPO, SMALL_FAQ, write_faq
from sqlalchemy.orm import Session

DEMO_FAQ = REPO / "knowledge" / "demo" / "faq.csv"
PG_URL = os.environ.get("KNOWLEDGE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
@pytest.fixture
def small_faq(tmp_path) -> Path:
    return write_faq(tmp_path / "faq.csv", SMALL_FAQ)


@pytest.fixture(scope="session")
def demo_index_dir(tmp_path_factory) -> Path:
    """The demo shop's FAQ, built and calibrated once for the session (as `build --faq` does)."""
    from knowledge.builder import build_and_publish
    from knowledge.importer import read_faq

    out = tmp_path_factory.mktemp("demo-index")
    build_and_publish(read_faq(DEMO_FAQ).entries, out)
    return out


@pytest.fixture(scope="session")
def demo_kb(demo_index_dir):
    from knowledge.kb import KnowledgeBase

    kb = KnowledgeBase(demo_index_dir, refresh_seconds=0)
    assert kb.refresh(force=True)
    return kb


# --- databases ----------------------------------------------------------------------------------
def _postgres_database() -> Iterator[str]:
    from tests.conftest import unavailable
    from tests.support import create_pg_database, drop_pg_database

    try:
        url = create_pg_database(PG_URL, "kb_test")
    except Exception as exc:  # unreachable server, no permission...
        unavailable(f"PostgreSQL at {PG_URL} not usable: {exc.__class__.__name__}: {str(exc).strip()[:200]}")
    try:
        yield url
    finally:
        drop_pg_database(PG_URL, url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path) -> Iterator[str]:
    """A migrated, empty database (Alembic `upgrade heads`, as production does)."""
    from actions.db import migrate
    from bot.settings import Settings

    if request.param == "sqlite":
        gen = iter([f"sqlite:///{tmp_path / 'kb.db'}"])
    else:
        gen = _postgres_database()
    url = next(gen)
    migrate.upgrade(Settings(DATABASE_URL=url))
    yield url
    for _ in gen:  # run the generator's cleanup
        pass


@pytest.fixture
def db_env(database_url, monkeypatch):
    """DATABASE_URL in the environment for code that uses get_settings() (the CLI)."""
    from bot.settings import reset_settings_cache

    monkeypatch.setenv("DATABASE_URL", database_url)
    reset_settings_cache()
    yield database_url
    reset_settings_cache()


@pytest.fixture
def session_factory(database_url):
    from actions.db.engine import create_sync_engine
    from bot.settings import Settings

    engine = create_sync_engine(Settings(DATABASE_URL=database_url))

    def factory() -> Session:
        return Session(engine)

    yield factory
    engine.dispose()
