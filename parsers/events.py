"""Events emitted by the incremental output parsers.

A parser turns token ids into a flat list of these events. Concatenating the ``text`` of all
:class:`ContentDelta` (resp. :class:`ReasoningDelta`) events gives the message content (resp.
reasoning); each tool call is announced exactly once by :class:`ToolCallStart` (index, id, name)
before any :class:`ToolArgsDelta` of the same index, and its arguments are the concatenation of
that index's :class:`ToolArgsDelta` texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """A piece of assistant content."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of reasoning ("thinking") text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A new tool call: ``index`` counts from 0 per message, ``id`` is 9 alphanumerics."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgsDelta:
    """A piece of the raw JSON arguments of tool call ``index``."""

    index: int
    text: str


Event = Union[ContentDelta, ReasoningDelta, ToolCallStart, ToolArgsDelta]

__all__ = ["ContentDelta", "ReasoningDelta", "ToolCallStart", "ToolArgsDelta", "Event"]
