"""What the bot should do with a message, as data: answer / clarify / decline.

The Rasa action turns this into words from the domain (persona tone lives there); nothing here is a
sentence shown to the customer except the stored answer text itself.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .calibration import MAX_CHOICES
from .guard import mentions_price
from .index import Hit

ANSWER = "answer"
CLARIFY = "clarify"
DECLINE = "decline"

# reasons
EXACT_MATCH = "exact_match"  # an SKU / model number the entry names
CONFIDENT = "confident"
CLOSE_CANDIDATES = "close_candidates"  # best hit good enough but the runner-up too close
LOW_CONFIDENCE = "low_confidence"  # something related, not good enough to answer
NO_MATCH = "no_match"
DATABASE_FACT = "database_fact"  # price / stock / order state: the catalog or order actions answer
EMPTY = "empty"
NO_INDEX = "no_index"


@dataclass(frozen=True)
class Candidate:
    id: str
    question: str
    answer: str
    source: str
    score: float
    category: str = ""
    kind: str = "faq"
    heading: str = ""
    # the stored answer states a product price: never show that number, the catalog has the live one
    mentions_price: bool = False

    @classmethod
    def from_hit(cls, hit: Hit) -> "Candidate":
        e = hit.entry
        return cls(e.id, e.question, e.answer, e.source or e.id, round(hit.score, 4), e.category, e.kind, e.heading,
                   mentions_price(e.answer))


@dataclass(frozen=True)
class Decision:
    action: str  # answer | clarify | decline
    reason: str
    query: str
    answer: Optional[Candidate] = None  # set when action == answer
    candidates: Tuple[Candidate, ...] = ()  # the choices to offer when clarifying; top hits otherwise
    fact: Optional[str] = None  # price | stock | order when reason == database_fact
    # decline that a colleague should pick up (the hook of the escalation flow); False when another
    # action answers instead (database facts) or there is nothing to answer (empty message)
    escalate: bool = False
    index_version: Optional[str] = None
    thresholds: Dict[str, float] = field(default_factory=dict)

    @property
    def source(self) -> Optional[str]:
        return self.answer.source if self.answer else None

    def to_dict(self) -> Dict:
        """JSON-safe form for the tracker (slot or event metadata) so the source stays on record."""
        return asdict(self)


def decide(query: str, hits: Sequence[Hit], thresholds: Dict, *, fact: Optional[str] = None,
           index_version: Optional[str] = None) -> Decision:
    th = {k: thresholds[k] for k in ("answer", "margin", "clarify")}
    top: List[Candidate] = [Candidate.from_hit(h) for h in hits[:MAX_CHOICES]]
    common = dict(query=query, index_version=index_version, thresholds=th)
    if fact:
        return Decision(DECLINE, DATABASE_FACT, fact=fact, candidates=tuple(top), **common)
    if not hits:
        return Decision(DECLINE, NO_MATCH, escalate=True, **common)
    best = hits[0]
    if best.exact:
        exact = [Candidate.from_hit(h) for h in hits if h.exact]
        if len(exact) == 1:
            return Decision(ANSWER, EXACT_MATCH, answer=exact[0], candidates=tuple(exact), **common)
        return Decision(CLARIFY, CLOSE_CANDIDATES, candidates=tuple(exact[:MAX_CHOICES]), **common)
    second = hits[1].score if len(hits) > 1 else 0.0
    if best.score >= th["answer"] and best.score - second >= th["margin"]:
        return Decision(ANSWER, CONFIDENT, answer=top[0], candidates=tuple(top), **common)
    choices = tuple(c for c in top if c.score >= th["clarify"])
    if choices:
        reason = CLOSE_CANDIDATES if best.score >= th["answer"] else LOW_CONFIDENCE
        return Decision(CLARIFY, reason, candidates=choices, **common)
    return Decision(DECLINE, NO_MATCH, candidates=tuple(top), escalate=True, **common)
