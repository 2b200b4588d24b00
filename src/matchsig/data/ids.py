"""Identifiers of queries and passages: their one sort order."""

from __future__ import annotations


def natural_key(identifier: str) -> tuple[int, int | str]:
    """Sort key: numeric ids in numeric order, then the others alphabetically."""
    return (0, int(identifier)) if identifier.isdigit() else (1, identifier)
