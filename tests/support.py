"""Throwaway resources shared by the tests and the benchmarks (bench/): free ports, PostgreSQL
databases created and dropped per run, and the product (`python -m bot run`) or any other server as
a subprocess in its own process group, stopped like Ctrl-C."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Dict, Iterator, Optional

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# the web IM identity secret of the products the tests and benchmarks start: their clients sign
# senders with it to speak as that customer (unsigned senders are anonymous visitors)
IM_IDENTITY_SECRET = "siyu-tests-im-identity"


def signed(sender: str) -> dict:
    """The web IM fields that make `sender` a trusted customer id."""
    from channels.im import sign_sender

    return {"sender": sender, "signature": sign_sender(IM_IDENTITY_SECRET, sender)}


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def local_http_server(path: str, handler) -> AsyncIterator[str]:
    """An aiohttp server on a free local port answering POSTs to `path` with `handler`; its URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


# --- PostgreSQL -----------------------------------------------------------------------------------
def create_pg_database(admin_url: str, prefix: str = "siyu_test") -> str:
    """A new, empty database on the server of `admin_url`; its URL."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(admin_url, connect_timeout=3)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(admin_url: str, url: str) -> None:
    import psycopg2

    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(admin_url, connect_timeout=3)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


@contextlib.contextmanager
def throwaway_pg_database(admin_url: str, prefix: str = "siyu_test") -> Iterator[str]:
    url = create_pg_database(admin_url, prefix)
    try:
        yield url
    finally:
        drop_pg_database(admin_url, url)


# --- processes ------------------------------------------------------------------------------------
def stop_process_group(process: Optional[subprocess.Popen], sig: int = signal.SIGINT,
                       grace_s: float = 30.0) -> int:
    """Signal the process's group (it was started with start_new_session=True), give it `grace_s`
    to exit, then kill it; its exit code."""
    if process is None:
        return 0
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            return process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()
    return process.returncode


class ProductProcess:
    """`python -m bot run --no-train` with the given environment (its database, ports, settings);
    output in `log`. `load_seconds`: from starting Rasa to ready."""

    def __init__(self, env: Dict[str, str], log: Path, start_timeout_s: float = 300.0,
                 stop_grace_s: float = 30.0) -> None:
        self.env = env
        self.log = log
        self.port = int(env["SIYU_RASA_PORT"])
        self.start_timeout_s, self.stop_grace_s = start_timeout_s, stop_grace_s
        self.process: Optional[subprocess.Popen] = None
        self.load_seconds = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def wechat_url(self) -> str:
        """The WeChat gateway (running when a connector is configured): where callbacks go."""
        return f"http://127.0.0.1:{self.env.get('SIYU_WECHAT_PORT', '5006')}"

    @property
    def console_url(self) -> str:
        """The support console (staff pages under /desk/, JSON API under /api/)."""
        return f"http://127.0.0.1:{self.env.get('SIYU_CONSOLE_PORT', '5008')}"

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    def start(self) -> None:
        self.process = subprocess.Popen([PYTHON, "-m", "bot", "run", "--no-train"], cwd=REPO, env=self.env,
                                        stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        started = None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(encoding="utf-8", errors="replace")
            if started is None and "[siyu] starting rasa" in text:
                started = time.monotonic()
            if "[siyu] ready:" in text:
                self.load_seconds = time.monotonic() - (started or time.monotonic())
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"product exited while starting:\n{text[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError("product not ready in time")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int:
        """Ctrl-C; the exit code (0 = stopped cleanly)."""
        return stop_process_group(self.process, signal.SIGINT, self.stop_grace_s)
