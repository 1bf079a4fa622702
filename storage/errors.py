"""The exceptions the storage layer raises, so callers can tell a user what went wrong.

Another owner's row is reported as `NotFound`, exactly like a missing row, so an id never reveals whether it exists.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class for every error raised on purpose by `storage`."""


class NotFound(StorageError, LookupError):
    """The row does not exist, or it belongs to another owner."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class EmptyInput(StorageError, ValueError):
    """Text that is empty or only whitespace."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is empty")
        self.field = field


class InputTooLong(StorageError, ValueError):
    """Text (or a list) longer than its configured limit; nothing is stored and nothing is truncated."""

    def __init__(self, field: str, *, limit: int, length: int) -> None:
        super().__init__(f"{field} is too long: {length} > limit {limit}")
        self.field = field
        self.limit = limit
        self.length = length


class UnstorableText(StorageError, ValueError):
    """Text with a character a database cannot store (NUL, or a lone surrogate); rejected on every backend."""

    def __init__(self, field: str, *, reason: str) -> None:
        super().__init__(f"{field} contains {reason}, which cannot be stored; remove it and try again")
        self.field = field
        self.reason = reason


class OverLimit(StorageError):
    """An owner asked for more than its share (S2S_OWNER_REQUESTS_PER_MINUTE, S2S_OWNER_MAX_PENDING_ITEMS);
    nothing was stored. The message says which limit and what to do."""


class DuplicateKey(StorageError, ValueError):
    """Two batch items share an `item_key`; keys must be unique within a job."""

    def __init__(self, key: str) -> None:
        super().__init__(f"item key {key!r} appears more than once")
        self.key = key
