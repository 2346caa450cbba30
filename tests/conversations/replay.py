"""Replays the conversation tests' stories through the running product, as a customer would type
them: each story's `user:` texts go, one turn at a time, to the web IM webhook under a fresh
anonymous sender, and the bot's replies are collected per turn.

`rasa test core` checks what the dialogue decides; this checks what the customer reads (no reply
said twice in one conversation, an answer to every message). Used by test_no_repeats.py; also
runnable by hand against a product that is already running:

    .venv/bin/python -m tests.conversations.replay http://127.0.0.1:5005 [story title substring]
"""
from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import aiohttp
import yaml
from rasa.shared.nlu.training_data.entities_parser import replace_entities

HERE = Path(__file__).resolve().parent
MESSY_STORIES = HERE / "messy_stories.yml"
STORY_FILES = (MESSY_STORIES, HERE / "test_stories.yml")
WEBHOOK = "/webhooks/im/webhook"
TURN_TIMEOUT_S = 60


@dataclass
class Story:
    title: str
    source: str
    turns: List[str]


@dataclass
class Turn:
    said: str
    replies: List[str] = field(default_factory=list)


def _user_texts(steps: Sequence[Dict]) -> Optional[List[str]]:
    """The customer's messages of a story, or None when a user step has no text (only an intent)."""
    texts: List[str] = []
    for step in steps:
        if "intent" in step or "user" in step:
            if "user" not in step:
                return None
            # what the customer typed: the story's entity annotations ("[SY…](order_id)") removed
            texts.append(replace_entities(str(step["user"])).strip())
    return texts


def load_stories(paths: Sequence[Path] = STORY_FILES) -> List[Story]:
    """Every story whose user turns all have text (the others cannot be typed into a chat)."""
    stories: List[Story] = []
    for path in paths:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for story in data.get("stories") or []:
            texts = _user_texts(story.get("steps") or [])
            if texts:
                stories.append(Story(story["story"], path.name, texts))
    return stories


def reply_texts(messages: Sequence[Dict]) -> List[str]:
    return [m["text"] for m in messages if isinstance(m.get("text"), str) and m["text"].strip()]


async def replay(base_url: str, story: Story, http: Optional[aiohttp.ClientSession] = None) -> List[Turn]:
    """The story's customer turns sent one after the other, each with the replies it got."""
    sender = f"replay-{uuid.uuid4().hex[:12]}"
    own = http is None
    http = http or aiohttp.ClientSession()
    turns: List[Turn] = []
    try:
        for text in story.turns:
            async with http.post(f"{base_url}{WEBHOOK}", data=json.dumps({"sender": sender, "message": text}),
                                 timeout=aiohttp.ClientTimeout(total=TURN_TIMEOUT_S)) as resp:
                body = await resp.json()
                assert resp.status == 200, f"{resp.status} for {text!r}: {body}"
            turns.append(Turn(text, reply_texts(body)))
    finally:
        if own:
            await http.close()
    return turns


def transcript(turns: Sequence[Turn], marks: Sequence[str] = ()) -> str:
    """The conversation as the customer saw it; replies in `marks` are flagged."""
    lines: List[str] = []
    for turn in turns:
        lines.append(f"  顾客: {turn.said}")
        lines.extend(f"  {'>>' if reply.strip() in marks else '  '}客服: " + reply.strip().replace("\n", "\n          ")
                     for reply in turn.replies)
    return "\n".join(lines)


def repeats(turns: Sequence[Turn]) -> List[str]:
    """Bot replies said more than once in the conversation (after stripping whitespace)."""
    seen: Dict[str, int] = {}
    for turn in turns:
        for reply in turn.replies:
            key = reply.strip()
            seen[key] = seen.get(key, 0) + 1
    return [text for text, count in seen.items() if count > 1]


def unanswered(turns: Sequence[Turn]) -> List[str]:
    return [turn.said for turn in turns if not turn.replies]


async def _main(base_url: str, only: str) -> int:
    problems = 0
    async with aiohttp.ClientSession() as http:
        for story in load_stories():
            if only and only not in story.title:
                continue
            turns = await replay(base_url, story, http)
            repeated, silent = repeats(turns), unanswered(turns)
            problems += bool(repeated or silent)
            flag = "REPEAT " if repeated else ""
            flag += "SILENT " if silent else ""
            print(f"== {flag}{story.title} ({story.source})\n{transcript(turns, repeated)}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    import asyncio

    arguments: Tuple[str, ...] = tuple(sys.argv[1:])
    sys.exit(asyncio.run(_main(arguments[0], arguments[1] if len(arguments) > 1 else "")))
