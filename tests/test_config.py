"""Bad configuration fails at startup with a message that says what to set."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from chat_history_k8s.config import Settings, SettingsError, get_settings, read_secret_files


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HISTORY_BACKEND": "postgres"}, "history_backend"),
        ({"HISTORY_MAX_MESSAGES": "7"}, "HISTORY_MAX_MESSAGES must be even"),
        ({"HISTORY_WINDOW_MESSAGES": "3"}, "HISTORY_WINDOW_MESSAGES must be even"),
        ({"HISTORY_MAX_MESSAGES": "10", "HISTORY_WINDOW_MESSAGES": "20"}, "must not exceed"),
        ({"HISTORY_BACKEND": "redis", "REDIS_URL": "localhost:6379"}, "REDIS_URL must start"),
        ({"CHAT_MODEL": "openai"}, "needs OPENAI_MODEL"),
        ({"MEMORY_MAX_MESSAGES": "100"}, "MEMORY_MAX_MESSAGES must be at least"),
        ({"REDIS_SOCKET_TIMEOUT_SECONDS": "0"}, "greater than 0"),
        ({"HISTORY_TTL_SECONDS": "-1"}, "greater than or equal to 0"),
        ({"HISTORY_API": "langgraph"}, "history_api"),
        (
            {"HISTORY_API": "checkpointer", "HISTORY_TTL_SECONDS": "10"},
            "HISTORY_TTL_SECONDS must be 0 or at least CHECKPOINT_LEASE_SECONDS",
        ),
        (
            {"HISTORY_API": "checkpointer", "CHAT_MODEL": "openai", "OPENAI_MODEL": "m"},
            "CHECKPOINT_LEASE_SECONDS must exceed twice OPENAI_TIMEOUT_SECONDS",
        ),
        ({"CHECKPOINT_LEASE_SECONDS": "0"}, "greater than 0"),
        ({"CHECKPOINT_MAX_CHECKPOINTS": "0"}, "greater than or equal to 1"),
        ({"AUTH_ENABLED": "true"}, "AUTH_ENABLED=true needs AUTH_API_KEYS_FILE"),
        ({"AUTH_API_KEYS_FILE": "/keys"}, "AUTH_API_KEYS_FILE is set but AUTH_ENABLED is false"),
        ({"RATE_LIMIT_TURNS": "10"}, "need AUTH_ENABLED=true"),
        ({"MAX_SESSIONS_PER_PRINCIPAL": "10"}, "need AUTH_ENABLED=true"),
        ({"RATE_LIMIT_WINDOW_SECONDS": "0"}, "greater than or equal to 1"),
        ({"AUTH_RELOAD_CHECK_SECONDS": "0"}, "greater than 0"),
        ({"AUTH_ENABLED": "maybe"}, "auth_enabled"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_environment_is_read_with_the_contract_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTORY_BACKEND", "redis")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("POD_NAME", "chat-7d9-abc")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    get_settings.cache_clear()
    try:
        s = get_settings()
        assert (s.history_backend, s.redis_url, s.pod_name) == (
            "redis",
            "redis://cache:6380/2",
            "chat-7d9-abc",
        )
        assert "s3cret" not in repr(s)  # secrets never show up in logs or tracebacks
    finally:
        get_settings.cache_clear()


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HISTORY_BACKEND", "HISTORY_API", "REDIS_URL", "POD_NAME"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.history_backend == "memory" and s.redis_url == "redis://localhost:6379/0"
    assert s.history_api == "message-history"  # today's path unless asked otherwise
    assert s.pod_name  # the hostname


def test_the_startup_error_names_the_environment_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HISTORY_TTL_SECONDS", "-1")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError) as raised:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert str(raised.value) == (
        "invalid settings: HISTORY_TTL_SECONDS: Input should be greater than or equal to 0 "
        "(got '-1')"
    )


def test_the_log_level_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "info")
    assert Settings().log_level == "INFO"


@pytest.mark.parametrize("secret", ["REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD", "OPENAI_API_KEY"])
def test_a_secret_is_read_from_its_file_once_at_startup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secret: str
) -> None:
    path = tmp_path / "secret"
    path.write_text("s3cret pass\n")  # the newline of `echo ... > file` is not part of it
    monkeypatch.delenv(secret, raising=False)
    monkeypatch.setenv(f"{secret}_FILE", str(path))
    settings = Settings()
    value = getattr(settings, secret.lower())
    assert value is not None and value.get_secret_value() == "s3cret pass"
    assert "s3cret" not in repr(settings)
    path.write_text("rotated")  # read at startup only: a running replica keeps its value
    assert getattr(settings, secret.lower()).get_secret_value() == "s3cret pass"


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        (None, {}, r"REDIS_PASSWORD_FILE: cannot read .*: FileNotFoundError"),
        ("\n", {}, r"REDIS_PASSWORD_FILE: .* is empty"),
        ("x", {"REDIS_PASSWORD": "y"}, "set REDIS_PASSWORD or REDIS_PASSWORD_FILE, not both"),
    ],
)
def test_a_bad_secret_file_stops_the_start_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    content: str | None,
    env: dict[str, str],
    message: str,
) -> None:
    path = tmp_path / "password"
    if content is not None:
        path.write_text(content)
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match=message):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_the_sentinel_password_file_fills_the_sentinel_password(tmp_path: Path) -> None:
    # REDIS_SENTINEL_PASSWORD belongs to REDIS_MODE=sentinel; its file form is read like the
    # others, into the same field.
    path = tmp_path / "sentinel-password"
    path.write_text("s3ntinel\n")
    data = read_secret_files({"redis_sentinel_password_file": str(path)})
    assert data["redis_sentinel_password"] == "s3ntinel"
    with pytest.raises(ValueError, match="set REDIS_SENTINEL_PASSWORD or REDIS_SENTINEL_"):
        read_secret_files(
            {"redis_sentinel_password_file": str(path), "redis_sentinel_password": "x"}
        )
