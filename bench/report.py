"""Writes one benchmark's section of docs/BENCHMARKS.md, leaving the other sections alone."""
from __future__ import annotations

import platform
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every figure here is written by a script under `bench/`; each section says which one and how to "
    "re-run it. Comparisons are ratios against a baseline measured in the same run.\n"
)


def speed_reference_ms() -> float:
    """A fixed pure-Python loop (best of 5): how fast this machine was at the time, so that runs of
    different days (the VM's speed varies) can be told apart from changes of the code."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        sum(range(1_000_000))
        best = min(best, time.perf_counter() - started)
    return best * 1000


def machine_line() -> str:
    return (f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
            f"{round(psutil.virtual_memory().total / 2**30)} GiB RAM, Python {platform.python_version()}; "
            f"speed reference sum(range(10**6)) {speed_reference_ms():.1f} ms")


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section delimited by <!-- name:start --> / <!-- name:end -->."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"<!-- {name}:start -->\n{markdown.rstrip()}\n\n_Measured {stamp} on {machine_line()}._\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body, text)
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    path.write_text(text, encoding="utf-8")
