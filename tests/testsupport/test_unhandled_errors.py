"""The e2e harness finds a 500's traceback in a replica's log, and only that."""

from __future__ import annotations

from testsupport.targets.base import unhandled_errors_in

LOG = """\
INFO:     Started server process [4242]
2026-12-01 23:44:51,998 WARNING chat_history_k8s.errors: history store unavailable: redis: x
2026-12-01 23:44:52,109 ERROR chat_history_k8s.errors: unhandled error on POST /v1/chat
Traceback (most recent call last):
  File "/app/chat_history_k8s/history/redis.py", line 216, in aget_window
    raw = await self._async().lrange(self.key, *self._window_range(n))
AttributeError: 'NoneType' object has no attribute 'writelines'
2026-12-01 23:44:52,200 WARNING chat_history_k8s.errors: history store unavailable: redis: y
2026-12-01 23:44:53,001 ERROR chat_history_k8s.errors: unhandled error on DELETE /v1/sessions/s
Traceback (most recent call last):
KeyError: 's'
INFO:     Shutting down
"""


def test_each_500_is_its_request_line_and_its_traceback() -> None:
    errors = unhandled_errors_in(LOG)
    assert [e.splitlines()[0].split(": ", 1)[1] for e in errors] == [
        "unhandled error on POST /v1/chat",
        "unhandled error on DELETE /v1/sessions/s",
    ]
    assert errors[0].splitlines()[-1] == (
        "AttributeError: 'NoneType' object has no attribute 'writelines'"
    )
    assert len(errors[0].splitlines()) == 5
    assert errors[1].splitlines()[1:] == ["Traceback (most recent call last):", "KeyError: 's'"]
    assert unhandled_errors_in(LOG.split("2026-12-01 23:44:52,109")[0]) == []
