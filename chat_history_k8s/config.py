"""Settings, read once from the environment (and validated) when the app starts."""

from __future__ import annotations

import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that may come from a file instead of the environment (`<NAME>_FILE`): a mounted
# Secret never shows up in the process's environment (`/proc/<pid>/environ`, `kubectl describe`,
# crash reporters that dump the environment).
_SECRET_FILES = {
    "redis_password": "redis_password_file",
    "redis_sentinel_password": "redis_sentinel_password_file",
    "openai_api_key": "openai_api_key_file",
}

# An origin as browsers send it: scheme://host[:port], the host a name, IPv4 or [IPv6].
_ORIGIN = re.compile(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?")


class Settings(BaseSettings):
    """Every knob of the service; the environment variable is the field name in upper case.

    Cross-field rules are checked here so a bad deployment fails at startup, not at the first
    request. `docs/configuration.md` documents each field.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    history_backend: Literal["memory", "redis"] = "memory"
    # Which LangChain memory API keeps the conversation: `BaseChatMessageHistory` (the service
    # loads the window and appends the turn) or a LangGraph checkpointer under `create_agent`.
    history_api: Literal["message-history", "checkpointer"] = "message-history"
    pod_name: str = Field(default_factory=socket.gethostname, min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Shared history limits (both backends behave the same way).
    history_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    history_max_messages: int = Field(default=1000, ge=2, le=1_000_000)
    history_window_messages: int = Field(default=20, ge=2, le=10_000)
    max_message_chars: int = Field(default=16_000, ge=1, le=1_000_000)

    # Connections (chat_history_k8s/protocol.py, when uvicorn runs with its `--http` class, as
    # the image and the chart do): how long a client may take to send a request's head and its
    # body, and how large the head may be. Idle keep-alive connections: uvicorn's
    # --timeout-keep-alive (5 s).
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    http_max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)

    # Memory backend.
    memory_max_sessions: int = Field(default=10_000, ge=1)
    memory_max_messages: int = Field(default=200_000, ge=2)

    # Redis backend. Timeouts and retries are explicit: redis-py's defaults changed across
    # major versions, and a chat turn must fail fast (503) rather than hang on a dead store.
    redis_url: str = "redis://localhost:6379/0"
    redis_password: SecretStr | None = None
    # Read once at startup; the chart mounts the Secret here instead of setting REDIS_PASSWORD.
    redis_password_file: Path | None = None
    redis_key_prefix: str = Field(default="chat-history:", min_length=1)
    redis_socket_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    redis_connect_timeout_seconds: float = Field(default=0.5, gt=0, le=30)
    redis_retries: int = Field(default=2, ge=0, le=10)
    redis_retry_backoff_seconds: float = Field(default=0.05, ge=0, le=5)
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    # Opened when the replica starts, before it reports ready (at most the pool's size): a
    # burst on a fresh replica then finds them open instead of opening them all at once.
    redis_warm_connections: int = Field(default=64, ge=0, le=10_000)
    # Which Redis: one server, the primary a set of Sentinels names, or a Redis Cluster.
    redis_mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    redis_sentinels: str = ""  # host:port,host:port,... (sentinel mode)
    redis_sentinel_master: str = ""  # the name the Sentinels monitor the primary under
    redis_sentinel_password: SecretStr | None = None  # the Sentinels' own requirepass
    redis_sentinel_password_file: Path | None = None  # or read from this file at startup
    # A turn is acknowledged once this many replicas have its write (WAIT, same round trip).
    redis_wait_replicas: int = Field(default=0, ge=0, le=100)
    redis_wait_timeout_seconds: float = Field(default=0.5, gt=0, le=30)

    # Checkpointer API: per-thread turn serialization and, with Redis, the saver's retention.
    # A lease must outlive the longest turn (the model call included): a turn that outlives it
    # is fenced out and answers 503. It is also how long a crashed holder blocks its thread.
    checkpoint_lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    checkpoint_lease_wait_seconds: float = Field(default=10.0, ge=0, le=600)
    checkpoint_max_checkpoints: int = Field(default=1, ge=1, le=1000)

    # Chat model: the built-in offline model, or an OpenAI-compatible endpoint.
    chat_model: Literal["builtin", "openai"] = "builtin"
    openai_model: str | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_api_key_file: Path | None = None
    openai_timeout_seconds: float = Field(default=30.0, gt=0)

    # Browsers (chat_history_k8s/web): the origins whose pages may call this API (CORS) and
    # that this service's page may call (its Content-Security-Policy), e.g. the other release in the
    # page's side-by-side mode. Empty: same origin only, no CORS header at all.
    cors_allow_origins: str = ""

    # Authentication (docs/security.md): bearer API keys, stored as `principal:sha256-hex` lines
    # in a file (a mounted Secret) that is re-read when it changes. Off: the HTTP contract of
    # DESIGN.md, every session shared by everyone who knows its id.
    auth_enabled: bool = False
    auth_api_keys_file: str | None = None
    # How often a request may look at the key file's stat for a change (a rotation takes effect
    # within this, once the kubelet has updated the mounted Secret).
    auth_reload_check_seconds: float = Field(default=1.0, gt=0, le=300)

    # Abuse limits, per principal (so they need AUTH_ENABLED); 0 turns a limit off. In Redis when
    # HISTORY_BACKEND=redis (shared by every replica), else per process.
    rate_limit_turns: int = Field(default=0, ge=0, le=1_000_000)
    rate_limit_window_seconds: int = Field(default=60, ge=1, le=86_400)
    max_sessions_per_principal: int = Field(default=0, ge=0, le=10_000_000)

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        # REDIS_PASSWORD_FILE and the like, before the fields are validated.
        return read_secret_files(data) if isinstance(data, dict) else data

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins_exactly(cls, value: str) -> str:
        # Exact origins only: a wildcard or a path would never match, or match too much.
        origins = [o.strip().rstrip("/").lower() for o in value.split(",") if o.strip()]
        for origin in origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: list scheme://host[:port] items, comma "
                    "separated (e.g. http://localhost:8080); no wildcard, no path"
                )
        return ",".join(origins)

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: the longest accepted message in the costliest JSON
        form (12 bytes a character: one outside the BMP, e.g. an emoji, written as two
        `\\uXXXX` escapes), plus 4 KiB for the session id, the keys and whitespace."""
        return self.max_message_chars * 12 + 4096

    @property
    def cors_origins(self) -> tuple[str, ...]:
        """CORS_ALLOW_ORIGINS as a tuple (empty when unset)."""
        return tuple(self.cors_allow_origins.split(",")) if self.cors_allow_origins else ()

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: object) -> object:
        # LOG_LEVEL=info is what people type; the logging module's names are upper case.
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        # Turns are stored as (human, ai) pairs; odd caps or windows would split a turn.
        for name in ("history_max_messages", "history_window_messages"):
            if getattr(self, name) % 2:
                raise ValueError(f"{name.upper()} must be even so that turns stay whole")
        if self.memory_max_messages < self.history_max_messages:
            raise ValueError("MEMORY_MAX_MESSAGES must be at least HISTORY_MAX_MESSAGES")
        if self.history_window_messages > self.history_max_messages:
            raise ValueError("HISTORY_WINDOW_MESSAGES must not exceed HISTORY_MAX_MESSAGES")
        if self.history_backend == "redis" and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.history_backend == "redis":
            self._check_redis_mode()
        if self.chat_model == "openai" and not self.openai_model:
            raise ValueError("CHAT_MODEL=openai needs OPENAI_MODEL (e.g. gpt-4o-mini)")
        if self.history_api == "checkpointer":
            self._check_checkpointer()
        self._check_auth()
        return self

    def _check_redis_mode(self) -> None:
        if self.redis_mode == "sentinel":
            if not self.redis_sentinel_master:
                raise ValueError("REDIS_MODE=sentinel needs REDIS_SENTINEL_MASTER (e.g. mymaster)")
            self.sentinel_addresses  # noqa: B018 - parsed here so a bad list fails at startup
        elif self.redis_mode == "cluster" and self.redis_url.startswith("unix://"):
            raise ValueError("REDIS_MODE=cluster needs a redis:// or rediss:// REDIS_URL")
        if self.redis_wait_replicas and (
            self.redis_wait_timeout_seconds >= self.redis_socket_timeout_seconds
        ):
            raise ValueError(
                "REDIS_WAIT_TIMEOUT_SECONDS must be less than REDIS_SOCKET_TIMEOUT_SECONDS "
                "(WAIT's answer must come before the socket gives up)"
            )

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; ValueError saying what is wrong."""
        addresses = []
        for item in (part.strip() for part in self.redis_sentinels.split(",")):
            if not item:
                continue
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"REDIS_SENTINELS: {item!r} is not host:port (list them comma separated, "
                    "e.g. sentinel-0:26379,sentinel-1:26379)"
                )
            addresses.append((host.strip("[]"), int(port)))
        if not addresses:
            raise ValueError("REDIS_MODE=sentinel needs REDIS_SENTINELS (host:port,host:port,...)")
        return addresses

    @property
    def limits_enabled(self) -> bool:
        """Whether any per-principal abuse limit is on."""
        return bool(self.rate_limit_turns or self.max_sessions_per_principal)

    def _check_auth(self) -> None:
        if self.auth_enabled and not self.auth_api_keys_file:
            raise ValueError(
                "AUTH_ENABLED=true needs AUTH_API_KEYS_FILE (a file of principal:sha256-hex lines)"
            )
        if self.auth_api_keys_file and not self.auth_enabled:
            # A key file that is silently not enforced would leave the API open.
            raise ValueError("AUTH_API_KEYS_FILE is set but AUTH_ENABLED is false: set both")
        if self.limits_enabled and not self.auth_enabled:
            # Limits are per principal: without authentication every client would share one
            # budget, and one flooding client would lock every other client out.
            raise ValueError(
                "RATE_LIMIT_TURNS and MAX_SESSIONS_PER_PRINCIPAL need AUTH_ENABLED=true "
                "(the limits are per principal)"
            )

    def _check_checkpointer(self) -> None:
        lease = self.checkpoint_lease_seconds
        if self.history_ttl_seconds and self.history_ttl_seconds < lease:
            # The lease lives among the thread's keys: it must not outlive them.
            raise ValueError("HISTORY_TTL_SECONDS must be 0 or at least CHECKPOINT_LEASE_SECONDS")
        # The OpenAI client tries twice (max_retries=1): the turn must end within the lease.
        if self.chat_model == "openai" and lease <= 2 * self.openai_timeout_seconds:
            raise ValueError(
                "CHECKPOINT_LEASE_SECONDS must exceed twice OPENAI_TIMEOUT_SECONDS (a model call "
                "is tried twice) so that a slow turn keeps its lease"
            )


def read_secret_files(data: dict[str, Any]) -> dict[str, Any]:
    """The settings `data` with each `<NAME>_FILE` read into `<NAME>` (trailing newlines dropped,
    as a shell's "$(cat file)" does). Both set is refused: which one wins would be a guess."""
    data = dict(data)
    for secret, file_field in _SECRET_FILES.items():
        path = data.get(file_field)
        if path in (None, ""):
            continue
        if data.get(secret) not in (None, ""):
            raise ValueError(f"set {secret.upper()} or {file_field.upper()}, not both")
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{file_field.upper()}: cannot read {path}: {exc.__class__.__name__}"
            ) from None
        if not value:
            raise ValueError(f"{file_field.upper()}: {path} is empty")
        data[secret] = value
    return data


class SettingsError(ValueError):
    """The environment holds an invalid setting; the message names each variable as it is set
    (`HISTORY_TTL_SECONDS`, not the field `history_ttl_seconds`) and what it must be."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use; SettingsError when
    they are invalid (the replica then fails to start, saying what to fix)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            variable = "_".join(str(part) for part in error["loc"]).upper() or "settings"
            got = f" (got {error['input']!r})" if error["loc"] else ""
            problems.append(f"{variable}: {error['msg']}{got}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
