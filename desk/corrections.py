"""错题本 from the desk: staff mark a bot turn as wrong and say what was right: the intent the
customer meant (an NLU training example), the knowledge entry that should have answered, or a new
answer (both through the knowledge base's own corrections store, knowledge/store.py). Knowledge
corrections take effect at the next index build, intents at the next training
(desk/training.py), which a supervisor starts from the console."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from bot.settings import REPO_ROOT, Settings
from desk.models import DeskConversation, DeskCorrection, DeskEvent
from desk.queue import DeskError, NotFound, Staff
from desk.transcript import RASA_EVENTS
from knowledge.export import write_nlu_examples

logger = logging.getLogger("desk.corrections")
INTENTS_DIR = REPO_ROOT / "nlu_data" / "intents"


def known_intents() -> List[str]:
    """The intents the NLU is trained on (one file per intent in nlu_data/intents)."""
    return sorted(p.stem for p in INTENTS_DIR.glob("*.yml"))


async def _customer_message(s: AsyncSession, row: DeskConversation, event_id: int) -> Any:
    """The customer message of a turn: the event itself, or the one a bot event answered."""
    event = (await s.execute(sa.select(RASA_EVENTS).where(
        RASA_EVENTS.c.id == event_id, RASA_EVENTS.c.sender_id == row.conversation_id))).first()
    if event is None:
        raise NotFound("这条消息不在这个会话里")
    if event.type_name != "user":
        event = (await s.execute(sa.select(RASA_EVENTS).where(
            RASA_EVENTS.c.sender_id == row.conversation_id, RASA_EVENTS.c.type_name == "user",
            RASA_EVENTS.c.id < event_id).order_by(RASA_EVENTS.c.id.desc()).limit(1))).first()
        if event is None:
            raise DeskError("这条回复之前没有顾客消息")
    return event


async def correct(s: AsyncSession, row: DeskConversation, staff: Staff, event_id: int, *,
                  intent: Optional[str] = None, kb_entry: Optional[str] = None, answer: Optional[str] = None,
                  question: Optional[str] = None, note: str = "") -> DeskCorrection:
    """Record a correction of the turn `event_id` (in the caller's transaction)."""
    if not (intent or kb_entry or answer):
        raise DeskError("请选择正确的意图、知识条目，或填写正确答案")
    if kb_entry and answer:
        raise DeskError("知识条目和新答案只能二选一")
    if intent and intent not in known_intents():
        raise DeskError(f"没有意图 {intent}")
    event = await _customer_message(s, row, event_id)
    data = json.loads(event.data or "{}")
    text = (data.get("text") or "").strip()
    if not text or text.startswith("/"):
        raise DeskError("按钮和空消息不能记入错题本")
    wrong_intent = ((data.get("parse_data") or {}).get("intent") or {}).get("name")
    kb_id = None
    if kb_entry or answer:
        from knowledge import store

        def add(sync_session) -> int:
            try:
                made = store.add_correction(sync_session, text, right_entry_id=kb_entry, new_answer=answer,
                                            new_question=question, intent=intent,
                                            conversation_id=row.conversation_id, staff=staff.username, note=note)
            except ValueError as exc:
                raise DeskError(str(exc)) from exc
            return made.id

        kb_id = await s.run_sync(add)
    correction = DeskCorrection(staff=staff.username, conversation=row.id, event_id=event.id, text=text[:2000],
                                wrong_intent=wrong_intent, right_intent=intent, kb_correction_id=kb_id,
                                note=note[:2000])
    s.add(correction)
    await s.flush()
    s.add(DeskEvent(conversation=row.id, kind="corrected", actor=staff.actor,
                    detail={"correction": correction.id, "intent": intent, "kb_entry": kb_entry,
                            "new_answer": bool(answer), "wrong_intent": wrong_intent}))
    logger.info("desk correction", extra={"conversation": row.conversation_id, "intent": intent,
                                          "kb_entry": kb_entry, "staff": staff.username})
    return correction


async def listing(s: AsyncSession, limit: int = 100) -> List[Dict[str, Any]]:
    rows = (await s.execute(sa.select(DeskCorrection).order_by(DeskCorrection.id.desc()).limit(limit))).scalars()
    return [{"id": c.id, "at": c.at.isoformat(timespec="seconds") + "Z", "staff": c.staff, "text": c.text,
             "wrong_intent": c.wrong_intent, "right_intent": c.right_intent, "kb_correction_id": c.kb_correction_id,
             "conversation": c.conversation, "event_id": c.event_id, "note": c.note} for c in rows]


def corrections_file(settings: Settings) -> Path:
    """The NLU examples from the 错题本, as training data next to nlu_data/ (bot/training.py)."""
    return Path(settings.var_dir) / "corrections" / "nlu.yml"


def export_nlu(settings: Settings) -> int:
    """Write the corrections that name an intent as Rasa NLU examples (or remove the file when there
    are none); returns how many. Blocking: used by training, outside the event loop."""
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine

    path = corrections_file(settings)
    engine = create_sync_engine(settings)
    try:
        with Session(engine) as session:
            rows = session.execute(sa.select(DeskCorrection.text, DeskCorrection.right_intent).where(
                DeskCorrection.right_intent.is_not(None)).order_by(DeskCorrection.id)).all()
    except sa.exc.DBAPIError:  # a database without the desk's tables: nothing to add
        rows = []
    finally:
        engine.dispose()
    known = set(known_intents())
    examples = [(text, intent) for text, intent in rows if intent in known and text.strip()]
    if not examples:
        path.unlink(missing_ok=True)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nlu_examples(examples, path)
