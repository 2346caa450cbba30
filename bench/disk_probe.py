"""How often the disk stalls a durable write while a benchmark phase runs.

An Official Account callback's message is committed (fsync'd by the database) before it is
answered, and its ack waits for that flush up to a few ms after the COMMIT reached the server
(channels/wechat/acknowledgement.py), so the disk's flush time is a floor under the reply time and,
while the gateway's database threads are all waiting on it, under the ack time. This VM's disk
stalls a flush for 20-115 ms a few times a minute even when idle; a probe running next to the
phase tells whether a slow ack or reply was the product or the disk. DiskLoad makes such stalls
frequent on purpose.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

STALL_MS = 20.0


class DiskStallProbe:
    """Appends a small record to a file in `folder` and flushes it (fdatasync) every `period_s`, in a
    thread, from `with` to the end of the block. Light on purpose: 10 flushes a second of one
    512-byte record, next to the database's own flushes on the same disk."""

    def __init__(self, folder: Path, period_s: float = 0.1) -> None:
        self.path = Path(folder) / "disk-probe.dat"
        self.period_s = period_s
        self.flush_ms: List[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-probe", daemon=True)

    def __enter__(self) -> "DiskStallProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while not self._stop.is_set():
                os.write(fd, b"x" * 512)
                started = time.perf_counter()
                os.fdatasync(fd)
                self.flush_ms.append((time.perf_counter() - started) * 1000)
                self._stop.wait(self.period_s)
        finally:
            os.close(fd)

    def summary(self) -> Dict[str, float]:
        """Flushes made, how many took longer than STALL_MS, and the longest (ms)."""
        return {"flushes": len(self.flush_ms), "stalls": sum(1 for ms in self.flush_ms if ms > STALL_MS),
                "max_ms": max(self.flush_ms, default=float("nan"))}


# what DiskLoad's process runs: write `mb` MB to a file and flush it, drop it, pause, and again
_WRITER = """
import os, sys, time
path, mb, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
block = b"\\0" * (1 << 20)
while True:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(mb):
            os.write(fd, block)
        os.fdatasync(fd)
    finally:
        os.close(fd)
        os.unlink(path)
    time.sleep(pause)
"""


class DiskLoad:
    """Another program's bulk writes on the same disk, from `with` to the end of the block: a
    process that writes `mb` MB and flushes them, pauses `pause_s`, and again (what a backup, a log
    shipper or a neighbour's batch job does). While it flushes, the database's small WAL flushes
    queue behind it: here the probe saw 7 % of its flushes over 20 ms (the longest 125 ms) with
    nothing else running, 0.8-3.1 % during the benchmark's latency phases, against about 0.5 % on
    the idle disk. It makes the disk's stalls frequent enough to measure what they do
    to the acks in one short run."""

    def __init__(self, folder: Path, mb: int = 128, pause_s: float = 1.0) -> None:
        self.path = Path(folder) / "disk-load.dat"
        self.mb, self.pause_s = mb, pause_s
        self._process: Optional[subprocess.Popen] = None

    def __enter__(self) -> "DiskLoad":
        self._process = subprocess.Popen([sys.executable, "-c", _WRITER, str(self.path), str(self.mb),
                                          str(self.pause_s)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        self._process.wait()
        self.path.unlink(missing_ok=True)


def same_disk(folder: Path, database_url: str) -> Optional[bool]:
    """Whether the probe's `folder` is on the file system that holds the database's data (a SQLite
    file's folder, or the data directory of a PostgreSQL server on this machine); None when that
    cannot be told (a remote server, no permission to read its setting or to see its folder). A
    probe on another disk (say a tmpfs /tmp) says nothing about the database's flushes."""
    try:
        if database_url.startswith("sqlite"):
            data = Path(database_url.split(":///", 1)[-1]).parent
        else:
            import sqlalchemy as sa

            engine = sa.create_engine(database_url)
            try:
                with engine.connect() as conn:
                    data = Path(conn.execute(sa.text("SHOW data_directory")).scalar_one())
            finally:
                engine.dispose()
        return os.stat(folder).st_dev == os.stat(data).st_dev
    except Exception:  # noqa: BLE001 - any failure means "unknown", said as such in the report
        return None
