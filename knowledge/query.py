"""What to match of a customer's message: the question, not the greeting and the story around it.

Real messages are long: "你好，我前天退了一件外套，想问一下退款一般多久到账啊" is a greeting, some context
and a question in one line. Matched whole, the greeting and the context dilute every similarity, the
confidence drops and the bot declines a question it knows. ``query_variants`` gives the index a few
readings of the message to match, best first in no particular sense:

  1. the message with greetings, politeness and filler removed (clause by clause);
  2. the last question clause on its own ("退款一般多久到账");
  3. that question clause with the clause just before it, for questions that only make sense with
     their context ("耳机只有一边响，怎么办").

The index scores every reading and keeps the one its calibrated scorer trusts most (calibration asks
its probes through the same function, so the thresholds account for taking the best of a few). All of
this is shop-agnostic: only Chinese chat conventions, no FAQ content.
"""
from __future__ import annotations

import re
from typing import List, Tuple

from .text import compact, normalize

# clause boundaries of chat messages: punctuation and the spaces people type instead of it
_SPLIT = re.compile(r"[，,。.！!？?；;~～…\s]+")
# a whole clause that is only greeting / politeness / address ("你好", "客服在吗", "谢谢啦")
_PREFIX = (
    r"(?:你好呀?|您好|你们好|大家好|hello|hi|hey|哈喽|哈罗|嗨|在吗|在么|在不在|在的吗|有人吗|亲爱的|亲亲|亲|"
    r"客服(?:小姐姐|小哥哥|大大)?|小姐姐|小哥哥|美女|老板|掌柜的?|店家|早上好|早安|上午好|中午好|下午好|晚上好|"
    r"打扰(?:一下|了|您了)?|不好意思|麻烦(?:您|你)?(?:一下)?|请问(?:一下|下)?|"
    r"(?:我)?(?:想|要|就想|还想)?(?:问|咨询|了解|确认)(?:一下|下|个事|件事|个问题)?|"
    r"(?:我)?(?:想|就想)?知道|那个|这个|就是|嗯+|额+|呃+|哎呀?|唉|哦+|噢|对了|还有|另外|然后|所以|"
    r"(?:有个|一个)问题|帮(?:我|忙)?(?:看看|看一下|查一下|问问)|帮帮忙|"
    r"好的|好吧|好滴|ok|okay|收到|知道了|明白了|没事了)"
)
_LEAD = re.compile(rf"^(?:{_PREFIX}[，,\s]*)+")
_TAIL = re.compile(
    r"(?:对吧|是吧|是吗|对吗|对不对|是不是|没错吧|可以吗|行吗|好吗|行不行|好不好|可不可以|"
    r"谢谢(?:啦|了|你|您)?|多谢|感谢|麻烦了|辛苦了|在线等|急+|急急急|着急|"
    r"[啊呀呢吗吧哈啦呗哦噢嘛么喔哇咯嘞]|不|没)+$"
)
# marks of a question: particles, question words, A-not-A, confirmation tails
_QUESTION = re.compile(
    r"[吗么呢吧嘛？?]|怎|咋|如何|多久|多少|多长|多大|几|什么|啥|哪|谁|为何|为啥|干嘛|"
    r"能不能|可不可以|可以不|能否|是否|是不是|有没有|要不要|会不会|行不行|用不用|算不算|"
    r"[\u4e00-\u9fff]不$|没有?$|对吧|是吧|是吗|对吗"
)
MIN_CLAUSE = 2  # characters of content a clause needs to count


def clean_clause(clause: str) -> str:
    """A clause without leading greetings / fillers and trailing particles / confirmation tails."""
    clause = _LEAD.sub("", clause.strip())
    return _TAIL.sub("", clause).strip()


def _clauses(text: str) -> List[Tuple[str, bool]]:
    """(cleaned clause, whether it asks something) for the clauses of a message that carry content."""
    out = []
    for raw in _SPLIT.split(normalize(text)):
        cleaned = clean_clause(raw)
        if len(compact(cleaned)) >= MIN_CLAUSE:
            out.append((cleaned, is_question(raw)))
    return out


def clauses(text: str) -> List[str]:
    """The clauses of a message that carry content, cleaned, in order."""
    return [c for c, _ in _clauses(text)]


def is_question(clause: str) -> bool:
    return bool(_QUESTION.search(clause))


def has_content(text: str) -> bool:
    """False for a message that is only greetings, thanks or filler ("在吗在吗", "好的谢谢")."""
    return bool(_clauses(text))


def query_variants(text: str, max_variants: int = 3) -> List[str]:
    """The readings of a message worth matching, the cleaned whole message first. Never empty for a
    message with content; a short clean question yields itself only."""
    original = normalize(text)
    parts = _clauses(original)
    if not parts:
        return []
    variants = [" ".join(c for c, _ in parts)]
    if len(parts) > 1:
        asked = [i for i, (_, q) in enumerate(parts) if q]
        focus = asked[-1] if asked else len(parts) - 1
        variants.append(parts[focus][0])
        if focus > 0:
            variants.append(parts[focus - 1][0] + " " + parts[focus][0])
    seen = set()
    unique = []
    for v in variants:
        key = compact(v)
        if key and key not in seen:
            seen.add(key)
            unique.append(v)
    return unique[:max_variants]


def readings(text: str) -> List[str]:
    """The shorter readings of a message for the index, most useful first: the question clause, the
    question with the clause before it, the cleaned whole message (measured on fold 1 of the realistic
    set: the question clause lifts most of the messages that a reading lifts at all). Leaves out
    readings that are the message itself."""
    variants = query_variants(text)
    ordered = variants[1:] + variants[:1]
    whole = compact(text)
    return [v for v in ordered if compact(v) != whole]
