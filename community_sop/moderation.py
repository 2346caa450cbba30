"""Moderation of customer WeChat groups: ads, QR-code promotion, 代购 phone numbers, repeat spam and
strongly negative messages, so the owner can be alerted and act.

Rules, not a model: every flag must be explainable to staff in one line (``Verdict.reason``) and a
shop must be able to change what counts without code, so the words and patterns live in
moderation.yml. Precision comes first (a false alarm about a customer is worse than a missed ad):
mentions of 淘宝, a phone number or a QR code alone are not enough, they need promotion words with
them. The detector only reads text; messages from the shop's own staff should not be passed to it.
"""
from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Deque, Dict, Iterable, List, Optional, Pattern, Sequence, Tuple

import yaml

VOCABULARY_PATH = Path(__file__).with_name("moderation.yml")

AD, QR_PROMO, DAIGOU_PHONE, SPAM_REPEAT, NEGATIVE = "ad", "qr_promo", "daigou_phone", "spam_repeat", "negative"
# in order of precedence: when a message is several things, the first one is reported
KINDS = (AD, QR_PROMO, DAIGOU_PHONE, SPAM_REPEAT, NEGATIVE)
KIND_NAMES = {AD: "广告", QR_PROMO: "二维码引流", DAIGOU_PHONE: "代购电话", SPAM_REPEAT: "刷屏", NEGATIVE: "恶意言论"}

# repeat-spam state: at most this many (group, member) and (group, text) keys, least recently seen dropped first
MAX_KEYS = 50_000
# messages remembered per (group, member); older ones fall out even inside the window
MEMBER_HISTORY = 20

# mainland mobile number, possibly written with spaces or dashes and a +86 prefix; not part of a longer
# number or an order / tracking number (SY2026…, YT88…)
PHONE = re.compile(r"(?<![0-9a-z])(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d){8}(?!\d)", re.IGNORECASE)
# punctuation that ends a clause: negation does not reach across it
CLAUSE_END = re.compile(r"[,.!?;:，。！？；：、\s]")
NEGATION_GAP = 3
NEVER = re.compile(r"(?!)")


@dataclass(frozen=True)
class Verdict:
    """What the detector thinks of one message; ``kind`` None means the message is fine."""

    kind: Optional[str]
    reason: str
    evidence: str = ""

    @property
    def flagged(self) -> bool:
        return self.kind is not None


FINE = Verdict(None, "")


def normalise(text: str) -> str:
    """Full-width to half-width and compatibility forms folded (Ｖ→V, ：→:), case kept for evidence."""
    return unicodedata.normalize("NFKC", text or "")


def repeat_key(text: str) -> str:
    """The form two messages must share to be "the same": no whitespace, punctuation or symbols, case folded."""
    kept = (ch for ch in normalise(text).casefold() if unicodedata.category(ch)[0] not in "PSZC")
    return "".join(kept)


def _words(values: Iterable) -> List[str]:
    return [normalise(str(v)) for v in values or () if str(v).strip()]


def _alternation(values: Iterable) -> Pattern:
    """One case-insensitive regex matching any of the words, longest first (so the evidence is the longest)."""
    words = sorted(set(_words(values)), key=len, reverse=True)
    if not words:
        return NEVER
    return re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE)


def _regex(value: str) -> Pattern:
    return re.compile(normalise(value), re.IGNORECASE)


@dataclass(frozen=True)
class Vocabulary:
    """moderation.yml, compiled."""

    marketplace_domains: Tuple[str, ...]
    short_link_domains: Tuple[str, ...]
    neutral_domains: Tuple[str, ...]
    link: Pattern
    link_promo: Pattern
    ad_phrases: Pattern
    ad_patterns: Tuple[Tuple[str, Pattern], ...]
    ad_combos: Tuple[Tuple[str, Tuple[Pattern, ...], bool], ...]  # (reason, word groups, skip with a phone)
    qr_words: Pattern
    qr_promo: Pattern
    qr_legit: Pattern
    daigou_words: Pattern
    negative_strong: Pattern
    negative_patterns: Tuple[Pattern, ...]
    negative_mild: Pattern
    anger: Tuple[Pattern, ...]
    negations: Tuple[str, ...]
    negative_exceptions: Pattern
    question_endings: Tuple[str, ...]
    repeat_min_chars: int
    repeat_allowed: Pattern
    repeat_exempt_prefixes: Tuple[str, ...]
    coordinated_min_chars: int
    coordinated_members: int

    @classmethod
    def from_dict(cls, data: Dict) -> "Vocabulary":
        links, ad, qr = data.get("links") or {}, data.get("ad") or {}, data.get("qr_promo") or {}
        negative, repeat = data.get("negative") or {}, data.get("repeat") or {}
        tlds = "|".join(sorted({re.escape(str(t).lower()) for t in links.get("tlds") or ("com", "cn")}, key=len,
                               reverse=True))
        link = re.compile(
            rf"(?:https?://)?((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:{tlds}))(?![a-z0-9-])"
            r"(?:[/:?#][^\s，。、“”\"'<>（）()]*)?",
            re.IGNORECASE,
        )
        allowed = [repeat_key(str(w)) for w in repeat.get("allowlist") or ()]
        allowed = sorted({w for w in allowed if w}, key=len, reverse=True)
        return cls(
            marketplace_domains=tuple(_domain(d) for d in links.get("marketplace_domains") or ()),
            short_link_domains=tuple(_domain(d) for d in links.get("short_link_domains") or ()),
            neutral_domains=tuple(_domain(d) for d in links.get("neutral_domains") or ()),
            link=link,
            link_promo=_alternation(links.get("promo_words")),
            ad_phrases=_alternation(ad.get("phrases")),
            ad_patterns=tuple((str(p.get("reason") or "广告"), _regex(p["regex"])) for p in ad.get("patterns") or ()),
            ad_combos=tuple(
                (str(c.get("reason") or "推广用语"), tuple(_alternation(g) for g in c.get("groups") or ()),
                 bool(c.get("skip_with_phone")))
                for c in ad.get("combos") or ()
            ),
            qr_words=_alternation(qr.get("qr_words")),
            qr_promo=_alternation(qr.get("promo_words")),
            qr_legit=_alternation(qr.get("legit_words")),
            daigou_words=_alternation((data.get("daigou_phone") or {}).get("words")),
            negative_strong=_alternation(negative.get("strong")),
            negative_patterns=tuple(_regex(p) for p in negative.get("patterns") or ()),
            negative_mild=_alternation(negative.get("mild")),
            anger=tuple(_regex(p) for p in negative.get("anger_patterns") or ()),
            negations=tuple(_words(negative.get("negations"))),
            negative_exceptions=_alternation(negative.get("exceptions")),
            question_endings=tuple(_words(negative.get("question_endings"))),
            repeat_min_chars=int(repeat.get("min_chars", 4)),
            repeat_allowed=re.compile("(?:" + "|".join(re.escape(w) for w in allowed) + ")+") if allowed else NEVER,
            repeat_exempt_prefixes=tuple(repeat_key(str(w)) for w in repeat.get("exempt_prefixes") or ()),
            coordinated_min_chars=int(repeat.get("coordinated_min_chars", 10)),
            coordinated_members=int(repeat.get("coordinated_members", 3)),
        )


def _domain(value: str) -> str:
    """Host of a domain or link as written by a person: "https://www.Shop.cn/x" -> "shop.cn"."""
    host = re.sub(r"^[a-z]+://", "", normalise(str(value)).strip().lower()).split("/")[0].split(":")[0]
    return host[4:] if host.startswith("www.") else host


def _host_in(host: str, domains: Sequence[str]) -> Optional[str]:
    for domain in domains:
        if domain and (host == domain or host.endswith("." + domain)):
            return domain
    return None


def load_vocabulary(path: Optional[Path] = None) -> Vocabulary:
    """The vocabulary at ``path`` (default moderation.yml), read and compiled once per file."""
    return _load_vocabulary(str(Path(path or VOCABULARY_PATH).resolve()))


@lru_cache(maxsize=8)
def _load_vocabulary(path: str) -> Vocabulary:
    with open(path, encoding="utf-8") as f:
        return Vocabulary.from_dict(yaml.safe_load(f) or {})


class Moderator:
    """Checks group messages one by one. Keeps the little state repeat spam needs (recent messages per
    member and per text, bounded), so one instance should see all the messages of the groups it watches."""

    def __init__(
        self,
        vocabulary_path: Optional[Path] = None,
        shop_domains: Sequence[str] = (),
        repeat_window_s: float = 600,
        repeat_threshold: int = 3,
    ):
        self.vocabulary = load_vocabulary(vocabulary_path)
        self.shop_domains = tuple(d for d in (_domain(s) for s in shop_domains) if d)
        self.repeat_window_s = float(repeat_window_s)
        self.repeat_threshold = int(repeat_threshold)
        self._by_member: "OrderedDict[Tuple[str, str], Deque[Tuple[float, str]]]" = OrderedDict()
        self._by_text: "OrderedDict[Tuple[str, str], Dict[str, float]]" = OrderedDict()
        self._lock = threading.Lock()

    def check(self, chat_id: str, member: str, text: str, at: float) -> Verdict:
        """The verdict on one message posted by ``member`` in group ``chat_id`` at ``at`` (epoch seconds).
        Every message must be passed, flagged or not, in posting order: it feeds the repeat-spam memory."""
        shown = normalise(text)
        content, links = self._split_links(shown)
        found = {
            AD: self._ad(content, links),
            QR_PROMO: self._qr_promo(content),
            DAIGOU_PHONE: self._daigou_phone(content),
            SPAM_REPEAT: self._repeat(chat_id, member, text, at),
            NEGATIVE: self._negative(content),
        }
        for kind in KINDS:
            if found[kind] is not None:
                reason, evidence = found[kind]
                return Verdict(kind, reason, evidence)
        return FINE

    def _split_links(self, text: str) -> Tuple[str, List[Tuple[str, str]]]:
        """The text with links blanked out (so their digits and letters match nothing else), and the
        links that are not the shop's own as (host, link)."""
        links = []
        for m in self.vocabulary.link.finditer(text):
            host = _domain(m.group(1))
            if not _host_in(host, self.shop_domains):
                links.append((host, m.group(0)))
        return self.vocabulary.link.sub(" ", text), links

    def _ad(self, content: str, links: List[Tuple[str, str]]) -> Optional[Tuple[str, str]]:
        v = self.vocabulary
        for host, link in links:
            marketplace = _host_in(host, v.marketplace_domains)
            if marketplace:
                return f"外部店铺链接: {marketplace}", link
        for reason, pattern in v.ad_patterns:
            m = pattern.search(content)
            if m:
                return f"{reason}: {m.group(0).strip()}", m.group(0).strip()
        m = v.ad_phrases.search(content)
        if m:
            return f"广告用语: {m.group(0)}", m.group(0)
        has_phone = PHONE.search(content) is not None
        for reason, groups, skip_with_phone in v.ad_combos:
            if skip_with_phone and has_phone:
                continue
            hits = [p.search(content) for p in groups]
            if groups and all(hits):
                words = " + ".join(h.group(0) for h in hits)
                return f"{reason}: {words}", words
        promo = v.link_promo.search(content)
        for host, link in links:
            if _host_in(host, v.neutral_domains):
                continue
            if _host_in(host, v.short_link_domains):
                if promo:
                    return f"短链接推广: {host}", link
            elif promo:
                return f"外部链接推广: {host}", link
        return None

    def _qr_promo(self, content: str) -> Optional[Tuple[str, str]]:
        v = self.vocabulary
        qr, promo = v.qr_words.search(content), v.qr_promo.search(content)
        if qr and promo and not v.qr_legit.search(content):
            return f"二维码引流: {qr.group(0)} + {promo.group(0)}", f"{qr.group(0)} … {promo.group(0)}"
        return None

    def _daigou_phone(self, content: str) -> Optional[Tuple[str, str]]:
        phone = PHONE.search(content)
        if not phone:
            return None
        word = self.vocabulary.daigou_words.search(content)
        if word:
            return f"代购/微商留手机号: {word.group(0)}", phone.group(0)
        return None

    def _negative(self, content: str) -> Optional[Tuple[str, str]]:
        v = self.vocabulary
        content = v.negative_exceptions.sub(" ", content)
        for pattern in (v.negative_strong, *v.negative_patterns):
            for m in pattern.finditer(content):
                if not self._negated(content, m.start()) and not self._asked(content, m.end()):
                    return f"恶意/辱骂言论: {m.group(0)}", m.group(0)
        anger = next((m for m in (p.search(content) for p in v.anger) if m), None)
        if anger:
            for m in v.negative_mild.finditer(content):
                if not self._negated(content, m.start()):
                    return f"情绪激烈: {m.group(0)} + {anger.group(0)}", f"{m.group(0)} … {anger.group(0)}"
        return None

    def _negated(self, text: str, start: int) -> bool:
        """True when a negation word ends at most NEGATION_GAP characters before ``start`` in the same clause
        ("不是骗子", "以为是骗人的")."""
        before = text[:start]
        ends = [m.end() for m in CLAUSE_END.finditer(before)]
        clause = before[ends[-1]:] if ends else before
        for word in self.vocabulary.negations:
            at = clause.rfind(word)
            if at >= 0 and len(clause) - (at + len(word)) <= NEGATION_GAP:
                return True
        return False

    def _asked(self, text: str, end: int) -> bool:
        """True when the clause that ``end`` is in ends as a question within a few characters ("是骗人的吗")."""
        m = CLAUSE_END.search(text, end)
        rest = text[end:m.start() if m else len(text)]
        return len(rest) <= NEGATION_GAP + 1 and any(rest.endswith(w) for w in self.vocabulary.question_endings)

    def _exempt_from_repeat(self, key: str) -> bool:
        v = self.vocabulary
        return (
            len(key) < v.repeat_min_chars
            or len(set(key)) <= 2
            or v.repeat_allowed.fullmatch(key) is not None
            or any(p and key.startswith(p) for p in v.repeat_exempt_prefixes)
        )

    def _repeat(self, chat_id: str, member: str, text: str, at: float) -> Optional[Tuple[str, str]]:
        key = repeat_key(text)
        if self._exempt_from_repeat(key):
            return None
        window, v = self.repeat_window_s, self.vocabulary
        minutes = f"{window / 60:g} 分钟"
        with self._lock:
            history = self._touch(self._by_member, (chat_id, member), lambda: deque(maxlen=MEMBER_HISTORY))
            while history and at - history[0][0] > window:
                history.popleft()
            same = 1 + sum(1 for t, k in history if k == key and 0 <= at - t <= window)
            history.append((at, key))
            members = 0
            if len(key) >= v.coordinated_min_chars:
                posters = self._touch(self._by_text, (chat_id, key), dict)
                for who in [w for w, t in posters.items() if at - t > window]:
                    del posters[who]
                posters[member] = at
                members = len(posters)
        if same >= self.repeat_threshold:
            return f"同一成员 {minutes}内重复发送 {same} 次", text.strip()
        if members >= v.coordinated_members:
            return f"{members} 位成员 {minutes}内发送相同内容", text.strip()
        return None

    @staticmethod
    def _touch(store: OrderedDict, key, make):
        """store[key], created when missing, marked most recent; the oldest keys go beyond MAX_KEYS."""
        value = store.get(key)
        if value is None:
            value = store[key] = make()
            while len(store) > MAX_KEYS:
                store.popitem(last=False)
        else:
            store.move_to_end(key)
        return value


# evaluation on a labelled set (tests/community_sop/moderation_set.yml)


@dataclass
class Scores:
    """Flagged-vs-not and per-kind precision / recall of one part of a labelled set."""

    part: str
    total: int
    problems: int
    flagged_precision: float
    flagged_recall: float
    per_kind: Dict[str, Tuple[float, float, int, int]]  # kind -> (precision, recall, labelled, predicted)
    misses: List[Tuple[str, str, Optional[str]]]  # (text, label, predicted) where they differ


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def score(part: str, items: Sequence[Dict], moderator: Optional[Moderator] = None) -> Scores:
    """Check each labelled message as if posted by its own member, far apart in time (no repeat effects)."""
    moderator = moderator or Moderator()
    pairs = []
    for i, item in enumerate(items):
        label = None if item["label"] in (None, "none") else item["label"]
        verdict = moderator.check(f"eval-{part}", f"member-{i}", item["text"], at=i * 100_000.0)
        pairs.append((item["text"], label, verdict.kind))
    flagged = sum(1 for _, _, p in pairs if p)
    problems = sum(1 for _, lab, _ in pairs if lab)
    both = sum(1 for _, lab, p in pairs if lab and p)
    labelled, predicted = Counter(lab for _, lab, _ in pairs), Counter(p for _, _, p in pairs)
    per_kind = {}
    for kind in KINDS:
        right = sum(1 for _, lab, p in pairs if lab == kind and p == kind)
        if labelled[kind] or predicted[kind]:
            per_kind[kind] = (_ratio(right, predicted[kind]), _ratio(right, labelled[kind]), labelled[kind],
                              predicted[kind])
    return Scores(part, len(pairs), problems, _ratio(both, flagged), _ratio(both, problems), per_kind,
                  [(t, lab or "none", p) for t, lab, p in pairs if lab != p])


def run_sequences(sequences: Sequence[Dict], **kwargs) -> List[Tuple[str, int, int, List[str]]]:
    """Each repeat sequence through a fresh Moderator: (name, right, total, descriptions of the wrong ones)."""
    results = []
    for seq in sequences:
        moderator, right, wrong = Moderator(**kwargs), 0, []
        for msg in seq["messages"]:
            expect = None if msg["expect"] in (None, "none") else msg["expect"]
            got = moderator.check(str(msg["chat"]), str(msg["member"]), msg["text"], float(msg["at"])).kind
            if got == expect:
                right += 1
            else:
                wrong.append(f"{msg['member']}@{msg['at']}: {msg['text']} "
                             f"应为 {expect or 'none'}，得到 {got or 'none'}")
        results.append((seq["name"], right, len(seq["messages"]), wrong))
    return results


def report(set_path: Path) -> str:
    """Markdown report of the labelled set: each part's scores, the misses, and the repeat sequences."""
    with open(set_path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    shop_domains = data.get("shop_domains") or ()
    parts = [score(p, data[p], Moderator(shop_domains=shop_domains)) for p in ("tuning", "holdout") if data.get(p)]
    lines = [
        "| part | messages | problems | precision (flagged) | recall (flagged) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in parts:
        lines.append(f"| {s.part} | {s.total} | {s.problems} | {s.flagged_precision:.1%} | {s.flagged_recall:.1%} |")
    lines += ["", "Per kind (precision / recall, labelled → predicted):", "",
              "| kind | " + " | ".join(s.part for s in parts) + " |", "| --- |" + " --- |" * len(parts)]
    for kind in KINDS:
        cells = []
        for s in parts:
            if kind in s.per_kind:
                p, r, n, m = s.per_kind[kind]
                cells.append(f"{p:.0%} / {r:.0%} ({n} → {m})")
            else:
                cells.append("–")
        lines.append(f"| {kind} ({KIND_NAMES[kind]}) | " + " | ".join(cells) + " |")
    for s in parts:
        lines += ["", f"Misses, {s.part} ({len(s.misses)}):", ""]
        lines += [f"- `{t}`: labelled {lab}, got {p or 'none'}" for t, lab, p in s.misses] or ["- none"]
    sequences = run_sequences(data.get("repeat_sequences") or (), shop_domains=shop_domains)
    if sequences:
        right, total = sum(r for _, r, _, _ in sequences), sum(t for _, _, t, _ in sequences)
        lines += ["", f"Repeat sequences (window 600 s, threshold 3): {right} / {total} messages as expected "
                  f"over {len(sequences)} sequences.", ""]
        for name, r, t, wrong in sequences:
            lines.append(f"- {name}: {r} / {t}" + ("".join(f"; {w}" for w in wrong)))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m community_sop.moderation",
                                     description="群消息审核：在标注集上评估，输出 markdown")
    parser.add_argument("--report", type=Path, required=True, metavar="SET_YML", help="标注集，如 "
                        "tests/community_sop/moderation_set.yml")
    print(report(parser.parse_args().report), end="")
