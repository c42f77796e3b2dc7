"""The command table: which handler runs each command, and in which session states it may run.

Owns the one check "must be (not) authenticated / must have a mailbox selected" (pymap's grouping by
state): handlers register with the state they need, and the session consults `allowed` once for every
command instead of each handler repeating it. Must not: do I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imap.replies import Reply
    from imap.session import Session


class State(Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class Needs(Enum):
    """What a command requires of the session's state (RFC 3501 §6.1-§6.4)."""

    ANY = "any"
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"  # authenticated or selected
    SELECTED = "selected"

    def allowed(self, state: State) -> bool:
        if self is Needs.ANY:
            return state is not State.LOGOUT
        if self is Needs.NOT_AUTHENTICATED:
            return state is State.NOT_AUTHENTICATED
        if self is Needs.AUTHENTICATED:
            return state in (State.AUTHENTICATED, State.SELECTED)
        return state is State.SELECTED


Handler = Callable[["Session", Any], Awaitable["Reply | None"]]  # None: it answered itself


@dataclass(frozen=True)
class Entry:
    needs: Needs
    handler: Handler


COMMANDS: dict[str, Entry] = {}


def command(*names: str, needs: Needs) -> Callable[[Handler], Handler]:
    """Register a handler for the given command names (upper case)."""

    def register(fn: Handler) -> Handler:
        for name in names:
            COMMANDS[name] = Entry(needs, fn)
        return fn

    return register
