"""Settings, read from the environment with the ``METAGOV_`` prefix.

Everything has a default that gives a working embedded gateway (SQLite, in-process jobs), so
``metagov serve`` needs no configuration. Production refuses the development defaults for secrets.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from metagov.db.urls import normalize_database_url
from metagov.outbound import Allowlist, check_url

# A well-known key so that a newcomer's gateway can store plugin secrets with zero configuration.
# It is public, so anything encrypted with it is not protected: production refuses to start with it.
DEVELOPMENT_SECRET_KEY = "bWV0YWdvdi1kZXZlbG9wbWVudC1rZXktbm90LXNlY3I="  # noqa: S105


ENV_PREFIX = "METAGOV_"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_redis_url(value: str) -> str:
    """Refuse what arq could not connect to, at start-up rather than at the first doorbell."""
    from arq.connections import RedisSettings

    try:
        RedisSettings.from_dsn(value)
    except (RuntimeError, ValueError):
        raise ValueError(
            "not a Redis URL; expected redis://host:6379/0, rediss://host:6380/0 or "
            "unix:///path/to/redis.sock"
        ) from None
    return value


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return ENV_PREFIX + field.upper()


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per invalid setting, naming the environment variable an operator sets (not the
    field name, which they never see) and never echoing the value (it may be a secret)."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = [str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "literal_error":
            message = message.replace("Input should be", "must be")
        lines.append(f"{env_name(location[0])}: {message}" if location else message)
    return lines


class Settings(BaseSettings):
    """The gateway's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="METAGOV_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./metagov.db"
    redis_url: str | None = None
    worker_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often each worker records that it is alive; a worker not seen for "
        "three intervals counts as gone",
    )
    require_worker: bool = Field(
        default=False,
        description="In worker mode, /readyz answers 503 while no worker has been seen",
    )
    worker_shutdown_grace_seconds: int = Field(
        default=30,
        ge=0,
        description="How long a stopping worker lets its running jobs finish before it "
        "cancels them (they are then run again by another worker)",
    )
    base_url: str = "http://127.0.0.1:8000"
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=lambda: [SecretStr(DEVELOPMENT_SECRET_KEY)]
    )
    auto_migrate: bool = True
    db_pool_size: int = Field(
        default=20,
        ge=1,
        description="PostgreSQL connections kept open: enough for the concurrent requests or "
        "jobs of one process, since a connection beyond it is opened and closed per use",
    )
    db_max_overflow: int = Field(
        default=10,
        ge=0,
        description="Extra connections in a burst beyond the pool; each is a new server process",
    )
    db_pool_pre_ping: bool = Field(
        default=False,
        description="Test each connection before use (a round trip per request); without it a "
        "connection the server dropped fails one request and is replaced",
    )
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    driver_api_key: SecretStr | None = None
    driver_event_url: str | None = None
    outbound_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts, host:port pairs or networks (CIDR) that deliveries and plugin calls "
        "to URLs chosen by Drivers or communities may reach although they are not public",
    )

    auth_redirect_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Driver URLs that OAuth installs may redirect back to (exact, without query)",
    )

    plugins_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    plugins_block: Annotated[list[str], NoDecode] = Field(default_factory=list)

    jobs_in_process: bool | None = Field(
        default=None,
        description="Run jobs inside `metagov serve`; by default only when no Redis is set",
    )
    sweep_interval_seconds: float = Field(default=1.0, gt=0)

    driver_webhook_secret: SecretStr | None = None
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    delivery_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [
            5.0,
            30.0,
            120.0,
            600.0,
            1800.0,
            3600.0,
            7200.0,
            14400.0,
            28800.0,
            43200.0,
            43200.0,
        ],
        description="Seconds before each retry (each varied by ±20 %); about 40 hours in all",
    )
    retry_after_cap_seconds: float = Field(default=86400.0, gt=0)
    inbox_max_attempts: int = Field(default=10, ge=1)
    inbox_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a job may take over one stored webhook (its plugin's and processes' "
        "hooks) before another job may take it over",
    )
    process_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long one hook of a process may run before another may take over",
    )
    process_lease_wait_seconds: float = Field(
        default=15.0,
        ge=0,
        description="How long closing a process (or a webhook for it) waits for another of its "
        "hooks to finish before answering 409 process_busy (or retrying later)",
    )

    # Rate limits ("<count>/<second|minute|hour|day>", or "off"). Generous: they stop floods and
    # key guessing, not normal use. Counted per process, or in Redis when the API uses Redis.
    rate_limit_driver: str = Field(
        default="60000/minute", description="Requests per Driver API key on /api/internal/*"
    )
    rate_limit_hooks: str = Field(
        default="120000/minute",
        description="Webhooks per client address on /api/hooks/* (a platform sends from few "
        "addresses: keep it above its peak, or off)",
    )
    rate_limit_public: str = Field(
        default="600/minute",
        description="Requests per client address on /api/action/* and /auth/*",
    )
    rate_limit_auth_failures: str = Field(
        default="30/minute",
        description="Failed Driver authentications per client address; past it, the address "
        "gets 429 on /api/internal/* until the window ends",
    )

    http_timeout_seconds: float = Field(default=10.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            return check_redis_url(value.strip()) if value.strip() else None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            level = value.strip().upper()
            return "WARNING" if level == "WARN" else level
        return value

    @property
    def worker_stale_seconds(self) -> float:
        """How long a worker may go unseen before it counts as gone."""
        return 3 * self.worker_heartbeat_seconds

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _parse_secret_keys(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("delivery_retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        return _split_csv(value)

    @property
    def runs_jobs_in_process(self) -> bool:
        return self.jobs_in_process if self.jobs_in_process is not None else not self.redis_url

    @field_validator("driver_event_url")
    @classmethod
    def _check_event_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator(
        "rate_limit_driver", "rate_limit_hooks", "rate_limit_public", "rate_limit_auth_failures"
    )
    @classmethod
    def _check_limit(cls, value: str) -> str:
        from limits import parse

        if value.strip() and value.strip().lower() not in ("off", "none", "0"):
            try:
                parse(value)
            except ValueError:
                raise ValueError(
                    "must be like 600/minute (a count per second, minute, hour or day), or off"
                ) from None
        return value

    @field_validator("outbound_allowlist")
    @classmethod
    def _check_allowlist(cls, entries: list[str]) -> list[str]:
        Allowlist.parse(entries)
        return entries

    @field_validator(
        "plugins_allow",
        "plugins_block",
        "auth_redirect_allowlist",
        "outbound_allowlist",
        mode="before",
    )
    @classmethod
    def _parse_plugin_lists(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("secret_keys")
    @classmethod
    def _check_fernet_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if not keys:
            raise ValueError("at least one key is required")
        for index, key in enumerate(keys):
            try:
                Fernet(key.get_secret_value())
            except ValueError:
                raise ValueError(
                    f"key {index} is not a Fernet key (32 url-safe base64-encoded bytes); "
                    "generate one with `metagov keys generate`"
                ) from None
        return keys

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.environment == "production" and self.uses_development_key:
            raise ValueError(
                "METAGOV_SECRET_KEYS still holds the public development key; "
                "set your own keys (`metagov keys generate`) before running in production"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_development_key(self) -> bool:
        return any(k.get_secret_value() == DEVELOPMENT_SECRET_KEY for k in self.secret_keys)
