"""What every reader shares: the pair representation, rejections and message helpers.

A reader turns one upstream row into a `Pair` or raises `Reject(reason)`. A pair is kept
compact and hashable (tuples of strings) so that exact de-duplication is a set lookup:

    prompt   = ((role, content), ...)      the shared conversation before the replies
    chosen   = "final assistant reply"     (plain text; written as [{"role": "assistant", ...}])
    rejected = "the other reply"
    metadata = {...}                        small JSON-able dict, written as a JSON string
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Pair(NamedTuple):
    prompt: tuple[tuple[str, str], ...]
    chosen: str
    rejected: str
    metadata: dict[str, Any]


class Reject(Exception):
    """Raised by a converter for a row it drops; `reason` is a short snake_case identifier."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


ROLES = {"user", "assistant", "system"}


def text_field(row: dict, key: str) -> str:
    """A required string value, stripped; None or a non-string is a rejected row."""
    value = row.get(key)
    if value is None:
        raise Reject("missing_value", f"{key} is null")
    if not isinstance(value, str):
        raise Reject("invalid_value", f"{key} is {type(value).__name__}, expected text")
    return value.strip()


def check_replies(chosen: str, rejected: str) -> None:
    if not chosen or not rejected:
        raise Reject("empty_reply")
    if chosen == rejected:
        raise Reject("identical_replies")


def normalize_messages(messages: Any, what: str) -> tuple[tuple[str, str], ...]:
    """A list of {role, content} dicts -> tuple of (role, stripped content); bad shape rejects."""
    if not isinstance(messages, (list, tuple)):
        raise Reject("malformed_messages", f"{what} is not a list of messages")
    out = []
    for message in messages:
        if not isinstance(message, dict):
            raise Reject("malformed_messages", f"{what} holds a non-message item")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise Reject("malformed_messages", f"{what} holds a message without a valid role/content")
        out.append((role, content.strip()))
    return tuple(out)


def check_prompt(prompt: tuple[tuple[str, str], ...]) -> None:
    if not prompt or not any(content for _, content in prompt):
        raise Reject("empty_prompt")
    if prompt[-1][0] != "user":
        raise Reject("prompt_not_ending_with_user")
