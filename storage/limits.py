"""Input bounds for stored text, and the one check that enforces them.

Repository functions that store user text take a keyword `limits: Limits`: the flows pass the deployment's
(`Limits.from_settings(get_settings())`: S2S_MAX_MESSAGE_CHARS, S2S_MAX_QUESTION_CHARS, S2S_MAX_PASSAGE_CHARS,
S2S_MAX_BATCH_ITEMS); without it, DEFAULT_LIMITS, the settings' defaults. Storage never reads the environment.
Text over a limit raises `InputTooLong`; it is never truncated. Text with a character no database here can
store raises `UnstorableText` on SQLite and PostgreSQL alike (PostgreSQL refuses NUL in text with a DataError;
SQLite kept it; neither can encode a lone surrogate): it is rejected, not cleaned, so what is stored is what the
user sent. Parsers may call `check_text` or `unstorable_reason` themselves to report a bad line instead of
failing a whole upload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from settings import Settings
from storage.errors import EmptyInput, InputTooLong, UnstorableText
from storage.models import OWNER_MAX_CHARS

# NUL, and UTF-16 surrogate code points (only ever alone in a str: from JSON "\ud800" escapes, or bytes a
# terminal could not decode, which Python keeps as surrogateescape).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


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


DEFAULT_LIMITS = Limits.from_settings(Settings.model_construct())  # the defaults settings.py declares, no env


def unstorable_reason(text: str) -> str | None:
    """What in `text` a database cannot store, e.g. "a NUL character (U+0000) at position 3"; None if nothing."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    code = ord(found.group())
    kind = "a NUL character" if code == 0 else "a lone surrogate, not a valid character,"
    return f"{kind} (U+{code:04X}) at position {found.start() + 1}"


def storable(*keys: str) -> bool:
    """False if a lookup key (an owner, an id from a request) holds a character no row can hold: such a key
    matches nothing, and PostgreSQL would refuse the query with a DataError rather than find nothing."""
    return all(unstorable_reason(key) is None for key in keys)


def check_storable(text: str, *, field: str) -> str:
    """Return `text` unchanged unless it holds a character a database cannot store; raise UnstorableText then."""
    reason = unstorable_reason(text)
    if reason is not None:
        raise UnstorableText(field, reason=reason)
    return text


def check_text(text: str, *, limit: int, field: str) -> str:
    """Return `text` unchanged if it has a non-space character, at most `limit` characters and none a database
    cannot store; raise otherwise."""
    if not text or text.isspace():
        raise EmptyInput(field)
    if len(text) > limit:
        raise InputTooLong(field, limit=limit, length=len(text))
    return check_storable(text, field=field)


def check_owner(owner: str) -> str:
    """Owners are opaque keys (a login or a browser session id) that every owner-scoped query filters on."""
    return check_text(owner, limit=OWNER_MAX_CHARS, field="owner")


def check_optional_text(text: str | None, *, limit: int, field: str) -> str | None:
    """Like `check_text` for an optional field: None passes through."""
    return None if text is None else check_text(text, limit=limit, field=field)
