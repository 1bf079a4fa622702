"""The owner-scoped lookup: a conversation, question or batch job read by id for the owner who asks.

`get_owned` is the one place the UI side's get_conversation, get_question and get_job read their row, so they
cannot drift apart on the rule storage.errors states: another owner's row is NotFound, exactly like a missing
one. Listings and joins through another table (get_turn) write their own owner filter.
"""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.limits import storable
from storage.models import Conversation, QAJob, Question

_Owned = TypeVar("_Owned", Conversation, Question, QAJob)  # the rows with a string `id` and an `owner`


def get_owned(
    db: Session, model: type[_Owned], *, kind: str, row_id: str, owner: str, for_update: bool = False
) -> _Owned:
    """The row `row_id` of `model` if `owner` owns it; `for_update` locks it until commit (PostgreSQL).

    Raises NotFound(kind, row_id) for a missing row, another owner's row, and an id or owner no row can hold
    (a NUL, say): that one is not queried at all, since PostgreSQL would refuse it rather than find nothing.
    """
    if not storable(row_id, owner):
        raise NotFound(kind, row_id)
    query = select(model).where(model.id == row_id, model.owner == owner)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = db.scalar(query)
    if row is None:
        raise NotFound(kind, row_id)
    return row
