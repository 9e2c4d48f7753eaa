"""The session-id rule of the HTTP contract, and the check every route applies."""

from __future__ import annotations

import re

from chat_history_k8s.errors import ApiError

MAX_SESSION_ID_LENGTH = 128
SESSION_ID_RULE = f"1-{MAX_SESSION_ID_LENGTH} ASCII letters, digits and ._:@-, other than . and .."
# The rule as one regular expression, without look-around so that every JSON Schema tool reads
# it (the OpenAPI document publishes it): 1-128 characters of the set, not starting with a dot,
# or a dot and a non-dot, or two dots and at least one more. So never "." or "..", which no
# client could address in a URL path (/v1/sessions/./messages is normalized away).
_C, _N, _MAX = "[A-Za-z0-9._:@-]", "[A-Za-z0-9_:@-]", MAX_SESSION_ID_LENGTH
SESSION_ID_REGEX = (
    rf"^(?:{_N}{_C}{{0,{_MAX - 1}}}|\.{_N}{_C}{{0,{_MAX - 2}}}|\.\.{_C}{{1,{_MAX - 2}}})$"
)
SESSION_ID_PATTERN = re.compile(SESSION_ID_REGEX)
# As the OpenAPI document states it, for a path parameter or a body field.
SESSION_ID_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_SESSION_ID_LENGTH,
    "pattern": SESSION_ID_REGEX,
}


def checked_session_id(session_id: str) -> str:
    """`session_id` if it follows the rule, else `ApiError` 422 `invalid_request` naming it."""
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise ApiError(422, "invalid_request", f"session_id must be {SESSION_ID_RULE}")
    return session_id
