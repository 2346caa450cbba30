"""Siyu knowledge base: answers from the shop's FAQ and documents, with sources (issue 4).

The action server uses :class:`KnowledgeBase` (``adecide``); the rest is the machinery behind it.
"""
from .decision import ANSWER, CLARIFY, DECLINE, Candidate, Decision
from .guard import asks_database_fact
from .kb import KnowledgeBase

__all__ = ["ANSWER", "CLARIFY", "DECLINE", "Candidate", "Decision", "KnowledgeBase", "asks_database_fact"]
