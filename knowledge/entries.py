"""The unit of knowledge: one FAQ entry or one passage of a product document."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from typing import Any, Dict, Optional, Tuple

from .text import normalize

FAQ = "faq"
DOC = "doc"


@dataclass(frozen=True)
class Entry:
    id: str
    question: str
    answer: str
    similar: Tuple[str, ...] = ()
    category: str = ""
    source: str = ""
    # naive datetimes in the shop's time zone; None = unbounded
    valid_from: Optional[datetime] = None
    valid_to: Optional[datetime] = None
    kind: str = FAQ
    # for document passages: "尺码指南 > 女装上衣"
    heading: str = ""

    @property
    def questions(self) -> Tuple[str, ...]:
        """Every phrasing this entry answers: the standard question first, then the 相似问."""
        return (self.question,) + self.similar

    def is_valid_at(self, now: datetime) -> bool:
        if self.valid_from is not None and now < self.valid_from:
            return False
        if self.valid_to is not None and now > self.valid_to:
            return False
        return True

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["similar"] = list(self.similar)
        for key in ("valid_from", "valid_to"):
            data[key] = data[key].isoformat(sep=" ") if data[key] else None
        return data

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Entry":
        data = dict(data)
        data["similar"] = tuple(data.get("similar") or ())
        for key in ("valid_from", "valid_to"):
            data[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        return cls(**data)


def stable_id(question: str) -> str:
    """Id for a row that has none: derived from the question, so re-importing the same sheet replaces
    the entry instead of duplicating it."""
    return "faq-" + hashlib.sha1(normalize(question).encode("utf-8")).hexdigest()[:10]


_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                 "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d")


def parse_when(value: Any, *, end_of_day: bool) -> Optional[datetime]:
    """A date or date-time cell. A bare date in valid_to means "through that whole day"."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        value = value.replace(tzinfo=None)
        # spreadsheets store a date cell as midnight: a bare date in valid_to means the whole day
        if end_of_day and value.time() == time.min:
            return datetime.combine(value.date(), time(23, 59, 59))
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(23, 59, 59) if end_of_day else time.min)
    text = normalize(str(value)).replace("t", " ")
    for fmt in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if end_of_day and len(text) <= 10:
            parsed = datetime.combine(parsed.date(), time(23, 59, 59))
        return parsed
    raise ValueError(f"unreadable date {value!r} (use YYYY-MM-DD or YYYY-MM-DD HH:MM)")
