"""The catalog's own words for jieba: brands, categories, product aliases and short product names,
written to nlu_data/jieba/catalog_dict.txt after a product import. Without them a new brand or
product nickname is cut into single characters and the NLU and the knowledge base miss it. The file
is part of the training data: the fingerprint changes and the next `./siyu run` retrains."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, List, Set

import sqlalchemy as sa
from sqlalchemy.orm import Session

from actions.db.models import Product

CATALOG_DICT = Path(__file__).resolve().parents[2] / "nlu_data" / "jieba" / "catalog_dict.txt"
MAX_WORD_CHARS = 12  # whole long product titles would stop jieba from seeing their parts
_WORD = re.compile(r"^[\w·\-]+$")  # \w includes Chinese characters


def catalog_words(session: Session) -> List[str]:
    words: Set[str] = set()
    for name, brand, category, aliases in session.execute(
            sa.select(Product.name, Product.brand, Product.category, Product.aliases)):
        candidates = [brand, category, name, *(aliases or "").split(",")]
        words.update(w.strip() for w in candidates if _usable((w or "").strip()))
    return sorted(words)


def _usable(word: str) -> bool:
    # at least two characters with a Chinese one (ASCII model numbers are matched by regexes)
    return (2 <= len(word) <= MAX_WORD_CHARS and bool(_WORD.match(word))
            and any("\u4e00" <= c <= "\u9fff" for c in word))


def render(words: Iterable[str]) -> str:
    # no comment line: jieba would read it as a word
    return "".join(f"{w} 2000 nz\n" for w in words)


def write_catalog_dictionary(session: Session, path: Path = CATALOG_DICT) -> bool:
    """Rewrite the file if the catalog's words changed; True when it did (a retrain will follow)."""
    text = render(catalog_words(session))
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True
