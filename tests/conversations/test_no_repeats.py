"""The conversation tests' stories, typed into the running product (trained model, Rasa server,
action server, SQLite) by an anonymous web visitor, one turn at a time: within a conversation the
bot never says the same message twice, and every customer message gets an answer.

`rasa test core` checks which actions the dialogue chooses; this checks what the customer reads
(issue 24: a bot that repeats itself, or stays silent, in a messy conversation).
"""
from __future__ import annotations

import aiohttp
import pytest

from tests.conversations.replay import MESSY_STORIES, load_stories, repeats, replay, transcript, unanswered

pytestmark = pytest.mark.model

STORIES = load_stories()


def test_the_messy_stories_are_many_and_all_typed():
    messy = load_stories([MESSY_STORIES])
    assert len(messy) >= 40
    assert all(3 <= len(story.turns) <= 8 for story in messy), [s.title for s in messy if not 3 <= len(s.turns) <= 8]


@pytest.mark.parametrize("story", STORIES, ids=[f"{s.source}:{s.title}" for s in STORIES])
async def test_no_reply_repeats_and_every_message_is_answered(product_server, story):
    async with aiohttp.ClientSession() as http:
        turns = await replay(product_server.base_url, story, http)
    repeated = repeats(turns)
    assert not repeated, (f"the bot said the same thing twice in “{story.title}” ({story.source}):\n"
                          f"{transcript(turns, repeated)}")
    silent = unanswered(turns)
    assert not silent, f"no reply to {silent} in “{story.title}” ({story.source}):\n{transcript(turns)}"
