"""Input bounds for stored text, and the one check that enforces them.

Repository functions that store user text take a keyword `limits: Limits | None`; None means "the limits in
`get_settings()`" (S2S_MAX_MESSAGE_CHARS, S2S_MAX_QUESTION_CHARS, S2S_MAX_PASSAGE_CHARS, S2S_MAX_BATCH_ITEMS).
Text over a limit raises `InputTooLong`; it is never truncated. Parsers may call `check_text` themselves to
report a bad line instead of failing a whole upload.
"""

from __future__ import annotations

from dataclasses import dataclass

from settings import Settings, get_settings
from storage.errors import EmptyInput, InputTooLong
from storage.models import OWNER_MAX_CHARS


@dataclass(frozen=True)
class Limits:
    max_message_chars: int
    max_question_chars: int
    max_passage_chars: int
    max_batch_items: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_message_chars=settings.max_message_chars,
            max_question_chars=settings.max_question_chars,
            max_passage_chars=settings.max_passage_chars,
            max_batch_items=settings.max_batch_items,
        )


def resolve_limits(limits: Limits | None) -> Limits:
    return limits if limits is not None else Limits.from_settings(get_settings())


def check_text(text: str, *, limit: int, field: str) -> str:
    """Return `text` unchanged if it has a non-space character and at most `limit` characters; raise otherwise."""
    if not text or text.isspace():
        raise EmptyInput(field)
    if len(text) > limit:
        raise InputTooLong(field, limit=limit, length=len(text))
    return text


def check_owner(owner: str) -> str:
    """Owners are opaque keys (a login or a browser session id) that every owner-scoped query filters on."""
    return check_text(owner, limit=OWNER_MAX_CHARS, field="owner")


def check_optional_text(text: str | None, *, limit: int, field: str) -> str | None:
    """Like `check_text` for an optional field: None passes through."""
    return None if text is None else check_text(text, limit=limit, field=field)
