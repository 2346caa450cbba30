"""Shared fixtures: real databases (SQLite file, and PostgreSQL when reachable), the demo shop,
the trained model, and the whole product running as subprocesses.

Services that are not reachable are skipped with the reason printed, except under CI=true,
where a missing service is a failure.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
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


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- databases ------------------------------------------------------------------------------------
def _create_pg_database() -> str:
    import psycopg2

    name = f"siyu_test_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_pg_database(url: str) -> None:
    import psycopg2

    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


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

    use_database(url)
    upgrade()
    engine = create_sync_engine()
    with Session(engine) as session:
        seed_demo_data(session)
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


class Product:
    """The product started with `python -m bot run` against its own database and ports."""

    def __init__(self, env: Dict[str, str], rasa_port: int, log: Path) -> None:
        self.env = env
        self.database_url = env["DATABASE_URL"]
        self.rasa_port = rasa_port
        self.log = log
        self.process: Optional[subprocess.Popen] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    def start(self, timeout: float = 300) -> None:
        self.process = subprocess.Popen([PYTHON, "-m", "bot", "run", "--no-train"], cwd=REPO, env=self.env,
                                        stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(encoding="utf-8", errors="replace")
            if "[siyu] ready:" in text:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"product exited while starting:\n{text[-3000:]}")
            time.sleep(0.5)
        raise RuntimeError("product not ready in time")

    def stop(self) -> int:
        import signal

        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                return self.process.wait()
        return self.process.returncode if self.process else 0


def product_env(database_url: str, var_dir: Path, redis_url: Optional[str] = None, workers: int = 1,
                demo: bool = True) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "SIYU_VAR_DIR": str(var_dir), "SIYU_RASA_PORT": str(free_port()),
        "SIYU_ACTION_PORT": str(free_port()), "SIYU_DEMO": "true" if demo else "false",
        "SIYU_WORKERS": str(workers), "RASA_TELEMETRY_ENABLED": "false", "PYTHONUNBUFFERED": "1",
        "SIYU_KNOWLEDGE_INDEX_DIR": str(var_dir / "knowledge" / "index"),
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
    product = Product(env, int(env["SIYU_RASA_PORT"]), var_dir / "product.log")
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
