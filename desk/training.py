"""Retraining from the console: a supervisor starts it, the knowledge index is rebuilt (knowledge
corrections apply at once, as any index build), the NLU model is trained with the 错题本's intent
corrections, and both the new and the serving model are tested on the corrections and the field
set. The new model serves only once a supervisor switches it in; the Rasa server pulls the active
model from the console (Rasa's own model-server polling, endpoints.yml `models`)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import async_session, in_transaction
from actions.repositories import audit_repository
from bot.settings import REPO_ROOT, Settings, get_settings
from desk.models import DeskModel, now_utc
from desk.queue import Conflict, NotFound, Staff

logger = logging.getLogger("desk.training")
STEP_TIMEOUT_S = 30 * 60
LOG_TAIL = 4000


def serving_model(settings: Optional[Settings] = None) -> Optional[Path]:
    """The model the product started with (the launcher passes it), or the one of today's inputs."""
    settings = settings or get_settings()
    configured = os.environ.get("SIYU_ACTIVE_MODEL")
    if configured:
        return Path(configured)
    from bot.training import model_path

    path = model_path(settings)
    return path if path.exists() else None


async def active_model(s: AsyncSession) -> Optional[Path]:
    """The model Rasa should serve: the last one a supervisor switched in, else the starting one."""
    row = (await s.execute(sa.select(DeskModel).where(DeskModel.state == "active")
                           .order_by(DeskModel.activated_at.desc()).limit(1))).scalars().first()
    if row is not None and row.path and Path(row.path).exists():
        return Path(row.path)
    return serving_model()


def describe(row: DeskModel) -> Dict[str, Any]:
    return {"id": row.id, "state": row.state, "model": Path(row.path).name if row.path else None,
            "results": row.results or {}, "log": (row.log or "")[-1500:], "created_by": row.created_by,
            "created_at": row.created_at.isoformat(timespec="seconds") + "Z",
            "finished_at": row.finished_at.isoformat(timespec="seconds") + "Z" if row.finished_at else None,
            "activated_by": row.activated_by}


class Trainer:
    """At most one training at a time, run by the console process in the background."""

    def __init__(self) -> None:
        self._task: Optional[asyncio.Task] = None

    async def recover(self) -> None:
        """A training the console was running when it stopped will not finish: say so."""
        await in_transaction(lambda s: s.execute(sa.update(DeskModel).where(DeskModel.state == "training").values(
            state="failed", log="中断：控制台在训练过程中重启", finished_at=now_utc())))

    async def start(self, staff: Staff) -> Dict[str, Any]:
        async def create(s: AsyncSession) -> DeskModel:
            running = (await s.execute(sa.select(DeskModel.id).where(DeskModel.state == "training"))).first()
            if running is not None:
                raise Conflict("已有训练在进行中")
            row = DeskModel(state="training", created_by=staff.username, results={}, log="")
            s.add(row)
            await s.flush()
            audit_repository.record(s, staff.actor, "model_training_started", f"model:{row.id}")
            return row

        row = await in_transaction(create)
        self._task = asyncio.create_task(self._run(row.id))
        return describe(row)

    async def wait(self) -> None:
        """Until the current training has finished (tests)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def cancel(self) -> None:
        """The console is stopping: the training is abandoned (recover() marks it at the next start)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, row_id: int) -> None:
        log: List[str] = []
        try:
            await _step(log, "knowledge build", [sys.executable, "-m", "knowledge", "build", "--from-db"])
            await self._progress(row_id, log)
            await _step(log, "train", [sys.executable, "-m", "bot", "train"])
            await self._progress(row_id, log)
            from bot.training import model_path

            candidate = model_path(get_settings())
            if not candidate.exists():
                raise RuntimeError(f"training made no model at {candidate}")
            async with async_session() as s:
                current = await active_model(s)
            paths = [str(candidate)] + ([str(current)] if current and current != candidate else [])
            output = await _step(log, "evaluate", [sys.executable, "-m", "desk.evaluate",
                                                  *[a for p in paths for a in ("--model", p)]])
            scores = json.loads(output.strip().splitlines()[-1])
            results = {"candidate": scores.get(candidate.name),
                       "current": scores.get(current.name) if current else None,
                       "current_model": current.name if current else None,
                       "same_as_current": current == candidate}
            await self._finish(row_id, "ready", log, path=candidate, results=results)
        except Exception as exc:  # noqa: BLE001 - the console shows why; it keeps running
            logger.exception("model training failed")
            log.append(f"失败：{exc}")
            await self._finish(row_id, "failed", log)

    @staticmethod
    async def _progress(row_id: int, log: List[str]) -> None:
        """The log so far, for the console while the training runs."""
        async def save(s: AsyncSession) -> None:
            row = await s.get(DeskModel, row_id)
            row.log = "\n".join(log)[-LOG_TAIL:]
        await in_transaction(save)

    @staticmethod
    async def _finish(row_id: int, state: str, log: List[str], path: Optional[Path] = None,
                      results: Optional[Dict] = None) -> None:
        async def save(s: AsyncSession) -> None:
            row = await s.get(DeskModel, row_id)
            row.state, row.finished_at = state, now_utc()
            row.log = "\n".join(log)[-LOG_TAIL:]
            if path is not None:
                row.path, row.fingerprint = str(path), path.name.removesuffix(".tar.gz")
            if results is not None:
                row.results = results
        await in_transaction(save)


async def _step(log: List[str], name: str, argv: List[str]) -> str:
    log.append(f"== {name}")
    process = await asyncio.create_subprocess_exec(*argv, cwd=str(REPO_ROOT), stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT,
                                                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    try:
        out, _ = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT_S)
    except asyncio.TimeoutError:
        process.kill()
        raise RuntimeError(f"{name} took longer than {STEP_TIMEOUT_S // 60} minutes")
    except asyncio.CancelledError:  # the console is stopping: the step goes with it
        process.kill()
        raise
    text = out.decode("utf-8", errors="replace")
    log.append("\n".join(line for line in text.splitlines()[-15:] if line.strip()))
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {process.returncode})")
    return text


async def activate(model_id: int, staff: Staff) -> Dict[str, Any]:
    async def work(s: AsyncSession) -> DeskModel:
        row = await s.get(DeskModel, model_id)
        if row is None:
            raise NotFound("没有这个模型")
        if row.state != "ready" or not row.path or not Path(row.path).exists():
            raise Conflict("只有测试完成的模型可以启用")
        await s.execute(sa.update(DeskModel).where(DeskModel.state == "active").values(state="retired"))
        row.state, row.activated_by, row.activated_at = "active", staff.username, now_utc()
        audit_repository.record(s, staff.actor, "model_activated", f"model:{row.id}", {"model": row.fingerprint})
        return row

    row = await in_transaction(work)
    logger.info("model switched in", extra={"model": row.fingerprint, "staff": staff.username})
    return describe(row)


async def recent(limit: int = 10) -> List[Dict[str, Any]]:
    async with async_session() as s:
        rows = (await s.execute(sa.select(DeskModel).order_by(DeskModel.id.desc()).limit(limit))).scalars()
        return [describe(r) for r in rows]
