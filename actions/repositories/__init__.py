"""Async data access for the actions: each repository owns the queries of one part of the shop."""
