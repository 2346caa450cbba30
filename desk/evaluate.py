"""python -m desk.evaluate --model PATH [--model PATH ...]: how each model understands the desk's
corrections (the customer messages staff marked, with the intent they meant) and the project's
field set (tests/data/nlu_field_test.yml: written by the team, a smoke test, not a measure of real
customers). Prints JSON {path: {"corrections": {...}, "field_set": {...}}} for the console to show
before a supervisor switches a model in."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import sqlalchemy as sa

from bot.settings import REPO_ROOT, get_settings

FIELD_SET = REPO_ROOT / "tests" / "data" / "nlu_field_test.yml"


def corrections() -> List[Tuple[str, str]]:
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine
    from desk.models import DeskCorrection

    engine = create_sync_engine(get_settings())
    try:
        with Session(engine) as session:
            return [(t, i) for t, i in session.execute(sa.select(DeskCorrection.text, DeskCorrection.right_intent)
                                                       .where(DeskCorrection.right_intent.is_not(None))).all()]
    finally:
        engine.dispose()


def field_set() -> List[Tuple[str, str]]:
    if not FIELD_SET.exists():
        return []
    from rasa.shared.nlu.training_data.loading import load_data

    return [(m.get("text"), m.get("intent")) for m in load_data(str(FIELD_SET)).intent_examples]


async def score(agent, examples: List[Tuple[str, str]]) -> Dict:
    if not examples:
        return {"examples": 0, "accuracy": None, "wrong": []}
    wrong = []
    right = 0
    for text, intent in examples:
        got = (await agent.parse_message(text))["intent"]["name"]
        if got == intent:
            right += 1
        elif len(wrong) < 20:
            wrong.append({"text": text, "expected": intent, "got": got})
    return {"examples": len(examples), "accuracy": round(right / len(examples), 3), "wrong": wrong}


async def evaluate(paths: List[str]) -> Dict[str, Dict]:
    from rasa.core.agent import Agent

    sets = {"corrections": corrections(), "field_set": field_set()}
    results = {}
    for path in paths:
        agent = Agent.load(path)
        results[Path(path).name] = {name: await score(agent, examples) for name, examples in sets.items()}
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m desk.evaluate")
    parser.add_argument("--model", action="append", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(evaluate(args.model)), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
