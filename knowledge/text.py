"""Text normalisation and the three analyzers of the retrieval engine.

* words: a private ``jieba.Tokenizer`` with the shop dictionary (product names, brands, SKUs). Rasa's
  JiebaTokenizer mutates the process-global jieba, so sharing it would make our segmentation depend on
  whether the NLU pipeline happened to load first.
* char n-grams: robust to segmentation errors and to typos that keep most characters.
* pinyin syllables: robust to homophone typos (发漂 / 发票, 退或 / 退货), the most common kind in
  messages typed with a pinyin IME.
"""
from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import jieba

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHOP_DICT_DIR = REPO_ROOT / "nlu_data" / "jieba"

# Particles and politeness that carry no topic. Kept short on purpose: words such as 有/没/不/多久 decide
# between FAQ entries (有货 vs 没货, 多久发货 vs 多久到) and must stay.
STOPWORDS = frozenset(
    "的 了 吗 呢 啊 吧 呀 哦 嘛 哈 么 啦 噢 喔 哎 诶 嗯 亲 亲亲 您 你好 您好 请问 问一下 问下 一下 下 麻烦 谢谢 "
    "想问 想 问 我 你 你们 我们 这个 那个 这 那 就 都 也 请 吖 滴 哇 呐 咧 是不是 是否".split()
)
_SPACE_PUNCT = re.compile(r"[\s\u3000]+")
# everything that is not a letter, digit or CJK character is noise for matching
_NOT_WORD = re.compile(r"[^0-9a-z\u4e00-\u9fff]+")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def normalize(text: str) -> str:
    """NFKC (full-width letters/digits -> ASCII), lower case, collapsed spaces."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return _SPACE_PUNCT.sub(" ", text).strip()


def compact(text: str) -> str:
    """Normalised text with punctuation and spaces removed, the input of the n-gram analyzers."""
    return _NOT_WORD.sub("", normalize(text))


_BASE_LOCK = threading.Lock()
_BASE: Optional[tuple] = None  # (FREQ, total) of jieba's own dictionary, loaded once per process


def base_dictionary() -> tuple:
    """jieba's default dictionary, parsed once. Every index (re)load clones it (~10 ms) instead of
    re-reading it (~0.4 s in one C call that holds the GIL, i.e. blocks the event loop even when the
    load runs in a worker thread)."""
    global _BASE
    with _BASE_LOCK:
        if _BASE is None:
            jieba_logger = logging.getLogger("jieba")
            previous = jieba_logger.level
            jieba_logger.setLevel(logging.WARNING)
            try:
                tk = jieba.Tokenizer()
                tk.initialize()
            finally:
                jieba_logger.setLevel(previous)
            _BASE = (tk.FREQ, tk.total)
        return _BASE


class WordTokenizer:
    """jieba search-mode segmentation with the shop dictionary, on a private Tokenizer instance."""

    def __init__(self, dict_dir: Optional[Path] = SHOP_DICT_DIR) -> None:
        self._tk = jieba.Tokenizer()
        self._lock = threading.Lock()
        self._ready = False
        self.dict_files: List[Path] = (
            sorted(Path(dict_dir).glob("*.txt")) if dict_dir and Path(dict_dir).is_dir() else []
        )

    def _ensure_ready(self) -> None:
        # jieba's own lazy initialisation is not thread safe for a private instance
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            freq, total = base_dictionary()
            self._tk.FREQ, self._tk.total = dict(freq), total
            self._tk.initialized = True
            for path in self.dict_files:
                self._tk.load_userdict(str(path))
            self._ready = True

    def add_words(self, words: Iterable[str]) -> None:
        """Extra words known to be whole terms (SKUs, product names found in the FAQ)."""
        self._ensure_ready()
        for word in words:
            if word and len(word) > 1:
                self._tk.add_word(word, freq=2000)

    def tokens(self, text: str) -> List[str]:
        self._ensure_ready()
        out = []
        for tok in self._tk.cut_for_search(normalize(text), HMM=False):
            tok = tok.strip()
            if not tok or tok in STOPWORDS or not _NOT_WORD.sub("", tok):
                continue
            out.append(tok)
        return out


def char_ngrams(text: str, n_min: int = 1, n_max: int = 3) -> List[str]:
    s = compact(text)
    grams = []
    for n in range(n_min, n_max + 1):
        grams.extend(s[i:i + n] for i in range(len(s) - n + 1))
    return grams


@functools.lru_cache(maxsize=None)
def _char_pinyin(ch: str) -> str:
    from pypinyin import lazy_pinyin

    return lazy_pinyin(ch)[0] if _CJK.match(ch) else ch


def pinyin_syllables(text: str) -> List[str]:
    """One toneless syllable per CJK character (context-free: a typo has no context to speak of);
    runs of ASCII letters/digits stay one token."""
    out: List[str] = []
    for piece in re.findall(r"[\u4e00-\u9fff]|[0-9a-z]+", compact(text)):
        out.append(_char_pinyin(piece) if len(piece) == 1 else piece)
    return out


def pinyin_ngrams(text: str) -> List[str]:
    syl = pinyin_syllables(text)
    return syl + [f"{a}_{b}" for a, b in zip(syl, syl[1:])]


def dedupe(seq: Sequence[str]) -> List[str]:
    seen = set()
    return [x for x in seq if not (x in seen or seen.add(x))]
