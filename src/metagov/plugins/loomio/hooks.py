"""Reading Loomio's webhooks, which are hints and nothing more.

Loomio's webhook "chatbots" post a chat message (``{"text", "icon_url", "username", …}``; older
Loomio also sent ``kind``, ``url`` and ``title``) with no signature, so nothing in the body is
trusted: the plugin takes from it which poll or thread it is about (the ``/p/<key>`` and
``/d/<key>`` links) and, when given, Loomio's event kind, then reads the poll or thread itself
through the API. When the body names no kind (current Loomio), the kind is told from the poll as
Loomio reports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from metagov.plugins.sdk import WebhookRequest

DISCUSSION_KINDS = frozenset(
    {"new_discussion", "discussion_edited", "discussion_announced", "new_comment"}
)
POLL_KINDS = frozenset(
    {
        "poll_created",
        "poll_edited",
        "poll_announced",
        "poll_reminder",
        "poll_closing_soon",
        "poll_expired",
        "poll_closed_by_user",
        "poll_reopened",
        "stance_created",
        "stance_updated",
        "outcome_created",
        "outcome_updated",
        "outcome_review_due",
    }
)
LINK = re.compile(
    r"/(?P<kind>[pd])/(?P<key>[A-Za-z0-9]{4,40})(?![A-Za-z0-9])(?:/comment/(?P<comment>\d{1,18}))?"
)
MAX_TEXT = 20_000


@dataclass(frozen=True)
class Hint:
    """What a webhook says it is about."""

    kind: str | None
    poll_keys: tuple[str, ...]
    discussion_keys: tuple[str, ...]
    comment_id: int | None


def read_hint(webhook: WebhookRequest) -> Hint | None:
    """The links and kind a Loomio webhook names; None if it is not a Loomio chat message."""
    try:
        body = webhook.json()
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    kind = body.get("kind")
    if kind not in POLL_KINDS | DISCUSSION_KINDS:
        kind = None
    polls: dict[str, None] = {}
    discussions: dict[str, None] = {}
    comment: int | None = None
    for field in ("url", "text"):
        value = body.get(field)
        if not isinstance(value, str):
            continue
        for link in LINK.finditer(value[:MAX_TEXT]):
            if link["kind"] == "p":
                polls[link["key"]] = None
            else:
                discussions[link["key"]] = None
                if link["comment"] and comment is None:
                    comment = int(link["comment"])
    if not polls and not discussions:
        return None
    return Hint(kind, tuple(polls), tuple(discussions), comment)


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def poll_kind(hint: Hint, poll: dict[str, Any], records: dict[str, Any]) -> str:
    """Loomio's kind for a webhook about ``poll``: the one the body named, or else the one the
    poll's state shows (closed with an outcome, closed by someone before its closing time,
    expired at it, voted in, or new)."""
    if hint.kind is not None and hint.kind in POLL_KINDS:
        return hint.kind
    closed = _when(poll.get("closed_at"))
    if closed is not None:
        if poll.get("current_outcome_id") or records.get("outcomes"):
            return "outcome_created"
        closing = _when(poll.get("closing_at"))
        return (
            "poll_expired" if closing is not None and closed >= closing else "poll_closed_by_user"
        )
    decided = poll.get("decided_voters_count")
    if decided is None:
        decided = sum(
            1 for s in records.get("stances") or [] if isinstance(s, dict) and s.get("cast_at")
        )
    return "stance_created" if decided else "poll_created"


def discussion_kind(hint: Hint) -> str:
    if hint.kind is not None and hint.kind in DISCUSSION_KINDS:
        return hint.kind
    return "new_comment" if hint.comment_id is not None else "new_discussion"
