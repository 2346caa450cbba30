"""Atomic publication of an index, and cheap detection of a new one.

Layout of an index folder ``DIR``::

    DIR/CURRENT              name of the published build (one line)
    DIR/builds/<build id>/   one complete, immutable build (manifest.json written last)

A new build is written completely into its own folder, then ``CURRENT`` is replaced with one
rename(2), which is atomic: a reader sees the old index or the new one, never half of each. Readers
read ``CURRENT`` once and load everything from that build folder. ``DIR`` stays an ordinary folder
(no symlinks), so it can be copied or mounted elsewhere.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Optional

KEEP_BUILDS = 3
POINTER = "CURRENT"


def new_build_dir(target: Path) -> Path:
    # names sort by creation time down to the nanosecond: pruning keeps the newest builds
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now // 10**9))
    path = Path(target) / "builds" / f"{stamp}.{now % 10**9:09d}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    return path


def publish(build: Path, target: Path) -> None:
    """Make ``build`` (a folder under ``target/builds``) the current index; prune old builds."""
    target = Path(target)
    tmp = target / f".{POINTER}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(Path(build).name + "\n", encoding="utf-8")
    os.replace(tmp, target / POINTER)
    _prune(target, keep=Path(build).name)


def _prune(target: Path, keep: str) -> None:
    builds = sorted(p for p in (target / "builds").iterdir() if p.is_dir())
    # a reader that read CURRENT a moment ago may still be loading an older build: keep a few
    for old in builds[:-KEEP_BUILDS]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def current_version(target: Path) -> Optional[str]:
    """Identity of the published build: one small read, cheap enough to call on every message."""
    try:
        return (Path(target) / POINTER).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def current_build(target: Path) -> Optional[Path]:
    version = current_version(target)
    return Path(target) / "builds" / version if version else None
