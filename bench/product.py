"""The product as the benchmarks run it: `python -m bot run --no-train` in its own process group,
started with a given environment and stopped like Ctrl-C."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProductProcess:
    """Logs go to var_dir/product.log; `load_seconds` is the time from starting Rasa to ready."""

    def __init__(self, var_dir: Path, env: Dict[str, str]) -> None:
        self.var_dir, self.env = var_dir, env
        self.port = int(env["SIYU_RASA_PORT"])
        self.process: Optional[subprocess.Popen] = None
        self.load_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.var_dir / "product.log"

    def start(self, timeout_s: float = 600) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bot", "run", "--no-train"], cwd=REPO, env=self.env,
                                        stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        started = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if started is None and "[siyu] starting rasa" in text:
                started = time.monotonic()
            if "[siyu] ready:" in text:
                self.load_seconds = time.monotonic() - (started or time.monotonic())
                return
            if self.process.poll() is not None:
                raise RuntimeError(text[-3000:])
            time.sleep(0.1)
        raise RuntimeError("product did not start")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str, prefix: str = "siyu_bench") -> Iterator[str]:
    """A new, empty PostgreSQL database for one benchmark run (dropped afterwards); yields its URL."""
    import psycopg2

    name = f"{prefix}_{os.getpid()}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.cursor().execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
