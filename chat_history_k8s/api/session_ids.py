"""The session-id rule of the HTTP contract, and the check every route applies."""

from __future__ import annotations

import re

from chat_history_k8s.errors import ApiError

MAX_SESSION_ID_LENGTH = 128
SESSION_ID_PATTERN = re.compile(rf"^[A-Za-z0-9._:@-]{{1,{MAX_SESSION_ID_LENGTH}}}$")
SESSION_ID_RULE = f"1-{MAX_SESSION_ID_LENGTH} ASCII letters, digits and ._:@-, other than . and .."
# No client could address these two in a URL path: /v1/sessions/./messages is normalized away.
_UNADDRESSABLE = frozenset({".", ".."})


def checked_session_id(session_id: str) -> str:
    """`session_id` if it follows the rule, else `ApiError` 422 `invalid_request` naming it."""
    if session_id in _UNADDRESSABLE or not SESSION_ID_PATTERN.fullmatch(session_id):
        raise ApiError(422, "invalid_request", f"session_id must be {SESSION_ID_RULE}")
    return session_id
