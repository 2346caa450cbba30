"""The catalog: finding the product a customer means, and its live prices and stock."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from actions.db.models import Product

# Names and aliases change rarely; prices and stock are always read fresh (get_with_variants).
_NAME_INDEX_TTL_S = 30.0


@dataclass
class CatalogEntry:
    id: int
    spu: str
    name: str
    category: str
    brand: str
    terms: List[str] = field(default_factory=list)


@dataclass
class ProductMatch:
    entry: CatalogEntry
    score: float
    matched: str


class ProductNameIndex:
    """In-process index of product names, aliases, brands and categories."""

    def __init__(self) -> None:
        self._entries: List[CatalogEntry] = []
        self._categories: List[str] = []
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def entries(self, session: AsyncSession) -> List[CatalogEntry]:
        if time.monotonic() - self._loaded_at > _NAME_INDEX_TTL_S:
            async with self._lock:
                if time.monotonic() - self._loaded_at > _NAME_INDEX_TTL_S:
                    await self._load(session)
        return self._entries

    async def categories(self, session: AsyncSession) -> List[str]:
        await self.entries(session)
        return self._categories

    async def _load(self, session: AsyncSession) -> None:
        rows = (await session.execute(select(Product).where(Product.on_sale.is_(True)))).scalars().all()
        entries = []
        for p in rows:
            terms = {p.name, p.spu.lower(), p.spu}
            terms.update(a.strip() for a in (p.aliases or "").split(",") if a.strip())
            entries.append(CatalogEntry(p.id, p.spu, p.name, p.category, p.brand or "",
                                        sorted(terms, key=len, reverse=True)))
        self._entries = entries
        self._categories = sorted({e.category for e in entries})
        self._loaded_at = time.monotonic()

    def invalidate(self) -> None:
        self._loaded_at = 0.0


name_index = ProductNameIndex()


async def find(session: AsyncSession, text: str, limit: int = 5) -> List[ProductMatch]:
    """Products the text names, best first. Longer matched terms win: '真丝衬衫' beats '衬衫'."""
    text_l = text.lower()
    matches: Dict[int, ProductMatch] = {}
    for entry in await name_index.entries(session):
        for term in entry.terms:
            if term and term.lower() in text_l:
                score = len(term) + (2 if term == entry.name else 0)
                if entry.brand and entry.brand in text:
                    score += 1
                best = matches.get(entry.id)
                if best is None or score > best.score:
                    matches[entry.id] = ProductMatch(entry, score, term)
                break  # terms are sorted longest first
    ranked = sorted(matches.values(), key=lambda m: (-m.score, m.entry.id))
    if ranked:
        top = ranked[0].score
        ranked = [m for m in ranked if m.score >= top - 0.5]
    return ranked[:limit]


async def find_category(session: AsyncSession, text: str) -> Optional[str]:
    for category in await name_index.categories(session):
        if category in text:
            return category
    return None


async def get_with_variants(session: AsyncSession, product_id: int) -> Optional[Product]:
    stmt = select(Product).options(selectinload(Product.variants)).where(Product.id == product_id)
    return (await session.execute(stmt)).scalars().first()


async def get_by_spu(session: AsyncSession, spu: str) -> Optional[Product]:
    stmt = select(Product).options(selectinload(Product.variants)).where(Product.spu == spu)
    return (await session.execute(stmt)).scalars().first()


async def in_category(session: AsyncSession, category: str, limit: int = 5) -> List[Product]:
    stmt = (select(Product).options(selectinload(Product.variants))
            .where(Product.category == category, Product.on_sale.is_(True)).order_by(Product.id).limit(limit))
    return list((await session.execute(stmt)).scalars())


async def by_ids(session: AsyncSession, ids: Sequence[int]) -> List[Product]:
    if not ids:
        return []
    stmt = select(Product).options(selectinload(Product.variants)).where(Product.id.in_(list(ids)))
    found = {p.id: p for p in (await session.execute(stmt)).scalars()}
    return [found[i] for i in ids if i in found]
