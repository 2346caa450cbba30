"""Shared fixtures: real databases (SQLite file, and PostgreSQL when reachable), the demo shop,
the trained model, and the whole product running as subprocesses.

Services that are not reachable are skipped with the reason printed, except under CI=true,
where a missing service is a failure.
"""
from __future__ import annotations

import os
import socket
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest
import yaml

from tests.support import (
    IM_IDENTITY_SECRET,
    PYTHON,
    REPO,
    ProductProcess as Product,
    create_pg_database,
    drop_pg_database,
    free_port,
)

CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("SIYU_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("SIYU_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def unavailable(reason: str) -> None:
    """Skip, or fail under CI (where every service must be there)."""
    if CI:
        pytest.fail(f"required service unavailable under CI: {reason}")
    print(f"\nSKIP: {reason}")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


# --- databases ------------------------------------------------------------------------------------
def _create_pg_database() -> str:
    return create_pg_database(PG_ADMIN_URL)


def _drop_pg_database(url: str) -> None:
    drop_pg_database(PG_ADMIN_URL, url)


def use_database(url: str) -> None:
    from bot.settings import reset_settings_cache

    os.environ["DATABASE_URL"] = url
    reset_settings_cache()


def seed(url: str) -> None:
    """Migrate and create the demo shop in the database at `url`."""
    from sqlalchemy.orm import Session

    from actions.db.demo_data import seed_demo_data
    from actions.db.engine import create_sync_engine
    from actions.db.migrate import upgrade
    from community_sop.demo import seed_demo_groups

    use_database(url)
    upgrade()
    engine = create_sync_engine()
    with Session(engine) as session:
        seed_demo_data(session)
        seed_demo_groups(session)
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_shop(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('shop') / 'shop.db'}"
    seed(url)
    return url


@pytest.fixture(scope="session")
def postgres_shop() -> Iterator[str]:
    if not port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    url = _create_pg_database()
    try:
        seed(url)
        yield url
    finally:
        _drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def shop_db(request) -> Iterator[str]:
    """The demo shop on each real database; the actions and repositories use it."""
    url = request.getfixturevalue("sqlite_shop" if request.param == "sqlite" else "postgres_shop")
    use_database(url)
    yield url


@pytest.fixture
async def db_session(shop_db):
    from actions.db.engine import async_session, dispose_async_engines

    async with async_session() as session:
        yield session
    await dispose_async_engines()


@pytest.fixture(autouse=True)
async def _dispose_engines():
    yield
    from actions.db.engine import dispose_async_engines

    await dispose_async_engines()


@pytest.fixture
def redis_url() -> str:
    if not port_open("127.0.0.1", 6379):
        unavailable("Redis is not reachable on 127.0.0.1:6379")
    return REDIS_TEST_URL


# --- the model and the running product --------------------------------------------------------------
@pytest.fixture(scope="session")
def trained_model() -> Path:
    from bot.settings import get_settings
    from bot.training import model_path

    code = subprocess.call([PYTHON, "-m", "bot", "train"], cwd=REPO)
    assert code == 0, "training failed"
    path = model_path(get_settings())
    assert path.exists()
    return path


def product_env(database_url: str, var_dir: Path, redis_url: Optional[str] = None, workers: int = 1,
                demo: bool = True) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "SIYU_VAR_DIR": str(var_dir), "SIYU_RASA_PORT": str(free_port()),
        "SIYU_ACTION_PORT": str(free_port()), "SIYU_WECHAT_PORT": str(free_port()),
        "SIYU_CONSOLE_PORT": str(free_port()), "SIYU_DEMO": "true" if demo else "false",
        "SIYU_WORKERS": str(workers), "RASA_TELEMETRY_ENABLED": "false", "PYTHONUNBUFFERED": "1",
        "SIYU_KNOWLEDGE_INDEX_DIR": str(var_dir / "knowledge" / "index"), "SIYU_IM_IDENTITY_SECRET": IM_IDENTITY_SECRET,
    })
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


@pytest.fixture(scope="session")
def product_server(trained_model, tmp_path_factory) -> Iterator[Product]:
    """The whole product (action server + Rasa server with the trained model) on a seeded SQLite
    database, talked to over HTTP like a real client."""
    var_dir = tmp_path_factory.mktemp("product")
    url = f"sqlite:///{var_dir / 'shop.db'}"
    seed(url)
    env = product_env(url, var_dir)
    product = Product(env, var_dir / "product.log")
    product.start()
    try:
        yield product
    finally:
        product.stop()


def pytest_sessionfinish(session, exitstatus):
    """A SQLite connection left open by a test (its aiosqlite worker is a non-daemon thread) would
    keep pytest from exiting: report it and stop the worker so the run ends with its real result."""
    import threading

    import aiosqlite.core as core

    leaked = [t for t in threading.enumerate() if t.name.endswith("(_connection_worker_thread)") and t.is_alive()]
    for thread in leaked:
        queue = thread._args[0]  # the worker's command queue
        queue.put((None, lambda: core._STOP_RUNNING_SENTINEL))
    if leaked:
        print(f"\nWARNING: {len(leaked)} aiosqlite connection(s) were left open by tests and have been stopped")


# --- business hours: a test must not depend on the time of day it runs at -----------------------


def write_shop_file(tmp_path: Path, **shop_changes) -> Path:
    from bot.settings import DEFAULT_SHOP_FILE

    data = yaml.safe_load(DEFAULT_SHOP_FILE.read_text(encoding="utf-8"))
    data["shop"].update(shop_changes)
    path = tmp_path / "shop.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def _use_shop_file(path: Path) -> Iterator[Path]:
    from bot.settings import reset_settings_cache

    before = os.environ.get("SIYU_SHOP_FILE")
    os.environ["SIYU_SHOP_FILE"] = str(path)
    reset_settings_cache()
    yield path
    if before is None:
        os.environ.pop("SIYU_SHOP_FILE", None)
    else:
        os.environ["SIYU_SHOP_FILE"] = before
    reset_settings_cache()


ALWAYS = {"start": "00:00", "end": "23:59:59", "days": [1, 2, 3, 4, 5, 6, 7]}
NEVER = {"start": "09:00", "end": "18:00", "days": []}


@pytest.fixture
def open_hours(tmp_path) -> Iterator[Path]:
    """Staff are at work around the clock."""
    yield from _use_shop_file(write_shop_file(tmp_path, business_hours=ALWAYS))


@pytest.fixture
def closed_hours(tmp_path) -> Iterator[Path]:
    """Staff are never at work."""
    yield from _use_shop_file(write_shop_file(tmp_path, business_hours=NEVER))
